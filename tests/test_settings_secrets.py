"""giftsync's own secrets are judged at start (DESIGN 4): every rule, every secret, every message.

Each refusal is one line naming the setting; the messages are compared whole, so none can carry
the value, and the values used are checked absent from the error text as well.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from app.keys import generate_keys, legacy_passphrase_key
from app.runtime import with_sandbox_secrets
from app.settings import Settings, SettingsError, decode_key, load_settings
from app.settings.strength import is_placeholder
from tests.pure import clean_database  # noqa: F401

ADMIN = "adm-9Vq4Lx7Rt2Wz5Kp8Nc3Hj6Bf1Gs0Dm"
HASH_KEY = "8c1f4e7a2d5b9036c8e1f4a7d2b5e9036c1f8e4a7d2b5c9e036f1a8d4c7b2e59"
PIN_KEY = "3e9a6d1c8f5b2e7a4d0c9f6b3a8e5d2c7f4b1a9e6d3c0f8b5a2e7d4c1b9f6a3e"
SHOPIFY_SECRET = "shpss_5c0e8a2f7d1b94e6"
HINT = "`giftsync keys` prints fresh values"
PLACEHOLDER = (
    ": a placeholder, not a secret (a word such as changeme, password or secret, one repeated "
    "character, or a run like 0123...); " + HINT
)


@pytest.fixture
def production(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A complete, valid production configuration; each test spoils one thing."""
    for name, value in {
        "DATABASE_URL": "postgresql://giftsync@db.internal/giftsync",
        "ADMIN_TOKEN": ADMIN,
        "CARD_HASH_KEY": HASH_KEY,
        "PIN_ENCRYPTION_KEY": PIN_KEY,
        "SHOPIFY_SHOP_DOMAIN": "shop.myshopify.com",
        "SHOPIFY_CLIENT_ID": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "SHOPIFY_API_SECRET": SHOPIFY_SECRET,
    }.items():
        clean_env.setenv(name, value)
    return clean_env


def refused(env: pytest.MonkeyPatch, name: str, value: str) -> list[str]:
    env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    # The exact messages below already prove it; this also covers a value that slips in.
    if len(value) >= 4 and value.lower() not in PLACEHOLDER.lower():
        assert value not in str(caught.value)
    return caught.value.problems


def test_the_production_base_is_accepted(production: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.sandbox_enabled is False
    assert settings.warnings() == []


@pytest.mark.parametrize("name", ["ADMIN_TOKEN", "CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"])
@pytest.mark.parametrize(
    "value",
    [
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "0" * 64,
        "0000000000000000",
        "changeme",
        "changeme-changeme",
        "CHANGEME123",
        "password",
        "secret",
        "secretsecretsecretsecretsecretsecret",
        "your-admin-token-here",
        "0123456789abcdef" * 4,
        "0123456789012345678901234567890123456789",
        "abcdefghijklmnopqrstuvwxyzabcdefghijkl",
        "9876543210987654321098765432109876543210",
    ],
)
def test_placeholders_are_refused_for_every_own_secret(
    production: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert refused(production, name, value) == [name + PLACEHOLDER]


def test_shopify_secret_placeholders_are_refused(production: pytest.MonkeyPatch) -> None:
    for value in ("changeme-changeme", "secretsecretsecret", "x" * 40, "0123456789abcdefghij"):
        assert refused(production, "SHOPIFY_API_SECRET", value) == [
            "SHOPIFY_API_SECRET"
            + PLACEHOLDER.replace(
                HINT, "copy the app's client secret from the Shopify Dev Dashboard"
            )
        ]


@pytest.mark.parametrize(
    "value",
    [
        # A placeholder is the whole value: inside a random token these words are harmless.
        "changeme-9Vq4Lx7Rt2Wz5Kp8Nc3Hj6Bf",
        "password7Rt2Wz5Kp8Nc3Hj6Bf1Gs0DmQ4",
        "0123456789-Lx7Rt2Wz5Kp8Nc3Hj6Bf1Gs",
        "secret-Lx7Rt2Wz5Kp8Nc3Hj6Bf1Gs0Dm9",
    ],
)
def test_placeholder_words_inside_a_strong_value_are_fine(
    production: pytest.MonkeyPatch, value: str
) -> None:
    production.setenv("ADMIN_TOKEN", value)
    assert load_settings().admin_token is not None


def test_admin_token_needs_32_characters(production: pytest.MonkeyPatch) -> None:
    assert refused(production, "ADMIN_TOKEN", "Xq7vL2pR9sK4mT8wYb3N") == [
        "ADMIN_TOKEN: too short (at least 32 characters); " + HINT
    ]
    production.setenv("ADMIN_TOKEN", "Xq7vL2pR9sK4mT8wYb3Nc6Hd1Gf5Jz0A")  # exactly 32
    assert load_settings().admin_token is not None


def test_admin_token_needs_10_distinct_characters(production: pytest.MonkeyPatch) -> None:
    value = ("a1b2c3d4x" * 4)[:36]  # 9 distinct characters, no word, no run
    assert refused(production, "ADMIN_TOKEN", value) == [
        "ADMIN_TOKEN: too few distinct characters (at least 10)"
    ]


def test_short_and_plain_admin_token_gets_both_lines(production: pytest.MonkeyPatch) -> None:
    assert refused(production, "ADMIN_TOKEN", "tiny-tiny") == [
        "ADMIN_TOKEN: too short (at least 32 characters); " + HINT,
        "ADMIN_TOKEN: too few distinct characters (at least 10)",
    ]


@pytest.mark.parametrize("name", ["CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"])
@pytest.mark.parametrize(
    "value",
    [
        "8c1f4e7a2d5b9036c8e1f4a7d2b5e903",  # 16 bytes of hex
        "8c1f4e7a2d5b9036c8e1f4a7d2b5e9036c1f8e4a7d2b5c9e036f1a8d4c7b2e59ab",  # 33 bytes
        base64.b64encode(bytes(range(40, 64))).decode(),  # 24 bytes of base64
        "correct horse battery staple, and then some more",  # a passphrase
        "8c1f4e7a2d5b9036c8e1f4a7d2b5e9036c1f8e4a7d2b5c9e036f1a8d4c7b2eZZ",  # not hex
    ],
)
def test_keys_must_be_32_bytes(production: pytest.MonkeyPatch, name: str, value: str) -> None:
    assert refused(production, name, value) == [
        f"{name}: must be 32 bytes written as 64 hex characters or base64; {HINT}"
    ]


@pytest.mark.parametrize("name", ["CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"])
def test_keys_need_10_distinct_characters(production: pytest.MonkeyPatch, name: str) -> None:
    value = ("a1b2c3d4e" * 8)[:64]  # valid hex, 9 distinct characters
    assert len(decode_key(value)) == 32
    assert refused(production, name, value) == [
        f"{name}: too few distinct characters (at least 10)"
    ]


@pytest.mark.parametrize("name", ["CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"])
def test_keys_may_be_base64(production: pytest.MonkeyPatch, name: str) -> None:
    production.setenv(name, base64.b64encode(bytes.fromhex(PIN_KEY[::-1])).decode())
    assert getattr(load_settings(), name.lower()) is not None


def test_shopify_api_secret_needs_16_characters(production: pytest.MonkeyPatch) -> None:
    expected = [
        "SHOPIFY_API_SECRET: too short (at least 16 characters); copy the app's client secret "
        "from the Shopify Dev Dashboard"
    ]
    assert refused(production, "SHOPIFY_API_SECRET", "s") == expected
    assert refused(production, "SHOPIFY_API_SECRET", "shpss_5c0e8a2f7") == expected  # 15
    production.setenv("SHOPIFY_API_SECRET", "shpss_5c0e8a2f7d")  # 16
    assert load_settings().shopify_api_secret is not None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ADMIN_TOKEN", "SHOPIFY_API_SECRET"),
        ("CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"),
        ("ADMIN_TOKEN", "CARD_HASH_KEY"),
        ("ADMIN_TOKEN", "PIN_ENCRYPTION_KEY"),
        ("CARD_HASH_KEY", "SHOPIFY_API_SECRET"),
        ("PIN_ENCRYPTION_KEY", "SHOPIFY_API_SECRET"),
    ],
)
def test_one_value_never_serves_two_secrets(
    production: pytest.MonkeyPatch, first: str, second: str
) -> None:
    shared = "9f3b6e0c2a5d8f1b4e7a0c3d6f9b2e5a8c1d4f7b0e3a6c9d2f5b8e1a4c7d0f36"
    production.setenv(first, shared)
    assert refused(production, second, shared) == [
        f"{second}: same value as {first}; every secret needs its own ({HINT})"
    ]


def test_the_same_key_bytes_in_two_spellings_are_the_same_key(
    production: pytest.MonkeyPatch,
) -> None:
    same_bytes = base64.b64encode(bytes.fromhex(HASH_KEY)).decode()
    assert refused(production, "PIN_ENCRYPTION_KEY", same_bytes) == [
        f"PIN_ENCRYPTION_KEY: same value as CARD_HASH_KEY; every secret needs its own ({HINT})"
    ]


def test_the_issue_s_hurried_deployment_is_refused_line_by_line(
    production: pytest.MonkeyPatch,
) -> None:
    production.setenv("ADMIN_TOKEN", "changeme-changeme")
    production.setenv("CARD_HASH_KEY", "0000000000000000")
    production.setenv("PIN_ENCRYPTION_KEY", "a" * 32)
    production.setenv("SHOPIFY_API_SECRET", "s")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert [line.split(":", 1)[0] for line in caught.value.problems] == [
        "ADMIN_TOKEN",
        "CARD_HASH_KEY",
        "PIN_ENCRYPTION_KEY",
        "SHOPIFY_API_SECRET",
    ]
    text = str(caught.value)
    assert "changeme-changeme" not in text and "0000000000000000" not in text
    assert "a" * 32 not in text


def test_one_strong_value_for_all_three_keys_is_refused(production: pytest.MonkeyPatch) -> None:
    for name in ("ADMIN_TOKEN", "CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"):
        production.setenv(name, PIN_KEY)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.problems == [
        f"CARD_HASH_KEY: same value as ADMIN_TOKEN; every secret needs its own ({HINT})",
        f"PIN_ENCRYPTION_KEY: same value as ADMIN_TOKEN; every secret needs its own ({HINT})",
    ]
    assert PIN_KEY not in str(caught.value)


def test_given_secrets_are_judged_in_sandbox_mode_too(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "true")
    assert refused(clean_env, "ADMIN_TOKEN", "password") == ["ADMIN_TOKEN" + PLACEHOLDER]


def test_upstream_credentials_are_required_not_judged(production: pytest.MonkeyPatch) -> None:
    production.setenv("VII_BASE_URL", "https://vii.example/api/")
    production.setenv("VII_USERNAME", "a")
    production.setenv("VII_PASSWORD", "password")
    production.setenv("VII_STORE_ID", "1")
    production.setenv("SHOPIFY_ADMIN_TOKEN", "x")
    assert load_settings().vii_password is not None


def test_generated_keys_pass_every_rule(production: pytest.MonkeyPatch) -> None:
    keys = generate_keys()
    assert sorted(keys) == ["ADMIN_TOKEN", "CARD_HASH_KEY", "PIN_ENCRYPTION_KEY"]
    assert len(keys["ADMIN_TOKEN"]) >= 32
    assert len(decode_key(keys["CARD_HASH_KEY"])) == 32 and len(keys["CARD_HASH_KEY"]) == 64
    assert len(decode_key(keys["PIN_ENCRYPTION_KEY"])) == 32
    for name, value in keys.items():
        production.setenv(name, value)
    settings = load_settings()
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == keys["ADMIN_TOKEN"]
    assert generate_keys() != keys


def test_sandbox_generated_secrets_pass_every_rule(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = with_sandbox_secrets(Settings(_env_file=None, sandbox=True, data_dir=tmp_path))  # type: ignore[call-arg]
    stored = json.loads((tmp_path / "sandbox-secrets.json").read_text())
    assert sorted(stored) == sorted(
        ["admin_token", "card_hash_key", "pin_encryption_key", "shopify_api_secret"]
    )
    clean_env.setenv("SANDBOX", "true")
    for name, value in stored.items():
        clean_env.setenv(name.upper(), value)
    assert load_settings().sandbox_enabled is True
    assert settings.admin_token is not None


def test_a_former_passphrase_converts_to_the_key_it_stood_for(
    production: pytest.MonkeyPatch,
) -> None:
    import hashlib

    passphrase = "an old passphrase of more than thirty-two characters"
    converted = legacy_passphrase_key(passphrase)
    assert converted == hashlib.sha256(b"giftsync-pin-key:" + passphrase.encode()).hexdigest()
    production.setenv("PIN_ENCRYPTION_KEY", converted)
    assert load_settings().pin_encryption_key is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("aa", True),
        ("abc", True),
        ("zyx", True),
        ("qwertyuiopqwertyuiop", True),
        ("Change-Me-Please-2024", True),
        ("ab", False),  # too short to be judged a run; only "too short"
        ("s", False),
        ("a-random-Lx7Rt2Wz5Kp8", False),
    ],
)
def test_placeholder_shapes(value: str, expected: bool) -> None:
    assert is_placeholder(value) is expected
