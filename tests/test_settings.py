from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest

from app.settings import SettingsError, load_settings
from tests.pure import clean_database  # noqa: F401

SECRET = "s3cret-value-that-must-not-print"


def test_defaults_without_upstreams_mean_sandbox(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.sandbox_enabled is True
    assert settings.database_url is None
    assert settings.poll_interval == timedelta(seconds=10)
    assert settings.shadow_card_ttl == timedelta(hours=24)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("PT24H", timedelta(hours=24)),
        ("P1DT30M", timedelta(days=1, minutes=30)),
        ("pt1.5s", timedelta(seconds=1.5)),
    ],
)
def test_durations_accept_seconds_and_iso8601(
    clean_env: pytest.MonkeyPatch, raw: str, expected: timedelta
) -> None:
    clean_env.setenv("POLL_INTERVAL", raw)
    assert load_settings().poll_interval == expected


@pytest.mark.parametrize("raw", ["ten", "P", "PT", "-5", "0", "1h"])
def test_bad_durations_name_the_setting(clean_env: pytest.MonkeyPatch, raw: str) -> None:
    clean_env.setenv("SHADOW_CARD_TTL", raw)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith("SHADOW_CARD_TTL:")


def test_money_settings_are_decimal_strings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MAX_CART_TOTAL", "2500.50")
    assert load_settings().max_cart_total == Decimal("2500.50")
    clean_env.setenv("MAX_CART_TOTAL", "10.001")
    with pytest.raises(SettingsError, match=r"MAX_CART_TOTAL: .*two decimal"):
        load_settings()


def test_production_mode_lists_every_missing_setting_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "false")
    clean_env.setenv("POS_KIND", "retail")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    names = [line.split(":", 1)[0] for line in caught.value.problems]
    for expected in (
        "ADMIN_TOKEN",
        "CARD_HASH_KEY",
        "PIN_ENCRYPTION_KEY",
        "SHOPIFY_SHOP_DOMAIN",
        "SHOPIFY_CLIENT_ID",
        "SHOPIFY_API_SECRET",
        "LIGHTSPEED_ACCOUNT_ID",
        "LIGHTSPEED_REFRESH_TOKEN",
    ):
        assert names.count(expected) == 1, caught.value.problems


def test_plan_growth_refuses_enterprise_directions(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("PLAN", "growth")
    clean_env.setenv("POS_KIND", "retail")
    clean_env.setenv("CREATE_UPDATE_SHOPIFY_GIFT_CARDS", "true")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems == [
        "CREATE_UPDATE_SHOPIFY_GIFT_CARDS: not available on PLAN=growth "
        "(growth allows DOWNLOAD_SHOPIFY_GIFT_CARDS and SHOPIFY_SERIAL_PREFIX only)"
    ]


def test_enum_and_format_errors(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("POS_KIND", "square")
    clean_env.setenv("SHOPIFY_SERIAL_PREFIX", "12a4")
    clean_env.setenv("CURRENCY", "dollars")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    names = sorted(line.split(":", 1)[0] for line in caught.value.problems)
    assert names == ["CURRENCY", "POS_KIND", "SHOPIFY_SERIAL_PREFIX"]


def test_secret_values_never_appear_in_errors(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PIN_ENCRYPTION_KEY", "short" + SECRET[:5])
    clean_env.setenv("ADMIN_TOKEN", "tiny")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "PIN_ENCRYPTION_KEY:" in text and "ADMIN_TOKEN:" in text
    assert "tiny" not in text and SECRET[:5] not in text
    clean_env.delenv("PIN_ENCRYPTION_KEY")
    clean_env.delenv("ADMIN_TOKEN")
    clean_env.setenv("DATABASE_URL", f"mysql://root:{SECRET}@db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == "DATABASE_URL: must be a postgresql:// URL"


def test_pin_key_forms(clean_env: pytest.MonkeyPatch) -> None:
    """32 bytes as 64 hex or base64 (either alphabet, padding optional); DESIGN 4 has no passphrase."""
    import base64

    raw = bytes(range(7, 39))
    for value in (
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ):
        clean_env.setenv("PIN_ENCRYPTION_KEY", value)
        assert load_settings().pin_encryption_key is not None
    clean_env.setenv("PIN_ENCRYPTION_KEY", "a passphrase of more than thirty-two chars")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems == [
        "PIN_ENCRYPTION_KEY: must be 32 bytes written as 64 hex characters or base64; "
        "`giftsync keys` prints fresh values"
    ]


def test_settings_repr_hides_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("ADMIN_TOKEN", SECRET)
    clean_env.setenv("SHOPIFY_ADMIN_TOKEN", SECRET)
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_cli_stops_with_one_line_per_problem(tmp_path: os.PathLike[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in {"DATABASE_URL"}}
    env.update(
        {
            "SANDBOX": "false",
            "SHOPIFY_SHOP_DOMAIN": "shop.example",
            "SHOPIFY_ADMIN_TOKEN": SECRET,
            "COLUMNS": "200",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("config error ") for line in lines), lines
    named = {line.removeprefix("config error ").split(":", 1)[0] for line in lines}
    assert named == {"ADMIN_TOKEN", "CARD_HASH_KEY", "PIN_ENCRYPTION_KEY", "SHOPIFY_API_SECRET"}
    assert SECRET not in result.stderr + result.stdout
