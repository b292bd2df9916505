"""Sandbox only when asked or when nothing is configured; misspellings, partial set-ups and plain
http stop the start; what is allowed but risky is listed for `/readyz` (DESIGN 4, issue 16)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import pytest

from app.settings import CheckoutAuth, Settings, SettingsError, load_settings
from app.settings.environment import edit_distance, misspellings
from tests.pure import clean_database  # noqa: F401
from tests.test_settings_secrets import ADMIN, HASH_KEY, PIN_KEY, SHOPIFY_SECRET

# The names DESIGN section 4 gives (issue 16 added the Shopify app, proxy, alert and POS ones).
DESIGN_4_NAMES = {
    "DATABASE_URL", "ADMIN_TOKEN", "CARD_HASH_KEY", "PIN_ENCRYPTION_KEY", "SHOPIFY_SHOP_DOMAIN",
    "SHOPIFY_CLIENT_ID", "SHOPIFY_API_SECRET", "SHOPIFY_ADMIN_TOKEN", "SHOPIFY_API_VERSION",
    "SHOPIFY_BASE_URL", "PUBLIC_URL", "CHECKOUT_AUTH", "TRUSTED_PROXIES", "ALERT_WEBHOOK_URL",
    "ALERT_INTERVAL", "LOG_JSON", "POS_KIND", "LIGHTSPEED_ACCOUNT_ID", "LIGHTSPEED_CLIENT_ID",
    "LIGHTSPEED_CLIENT_SECRET", "LIGHTSPEED_REFRESH_TOKEN", "LIGHTSPEED_BASE_URL",
    "LIGHTSPEED_TOKEN_URL", "LIGHTSPEED_BALANCE_SIGN", "LIGHTSPEED_SHOP_ID",
    "LIGHTSPEED_REGISTER_ID", "LIGHTSPEED_EMPLOYEE_ID", "LIGHTSPEED_PAYMENT_TYPE_ID",
    "ONSITE_BASE_URL", "ONSITE_USERNAME", "ONSITE_PASSWORD", "ONSITE_APP_ID", "ONSITE_PRIVATE_ID",
    "ONSITE_VERIFY_TLS", "ONSITE_GIFT_CARD_PRODUCT_CODE", "ONSITE_PAYMENT_METHOD", "VII_BASE_URL",
    "VII_USERNAME", "VII_PASSWORD", "VII_STORE_ID", "CREATE_UPDATE_SHOPIFY_GIFT_CARDS",
    "SEND_GIFT_CARD_NOTIFICATIONS", "DOWNLOAD_SHOPIFY_GIFT_CARDS", "SHOPIFY_SERIAL_PREFIX", "PLAN",
    "SHADOW_CARD_TTL", "POLL_INTERVAL", "RECONCILE_INTERVAL", "MAX_CART_TOTAL", "CURRENCY",
    "SANDBOX",
}  # fmt: skip


@pytest.fixture
def production(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
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


def problems() -> list[str]:
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return caught.value.problems


def test_every_design_4_setting_is_a_field() -> None:
    assert sorted(DESIGN_4_NAMES - {field.upper() for field in Settings.model_fields}) == []


# --- when the sandbox starts -------------------------------------------------------------------


def test_nothing_configured_means_sandbox_with_open_checkout(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.sandbox_enabled is True
    assert settings.checkout_auth is CheckoutAuth.OPEN
    assert settings.warnings() == []


def test_empty_values_count_as_not_set(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHOPIFY_SHOP_DOMAIN", "")
    clean_env.setenv("DATABASE_URL", "")
    assert load_settings().sandbox_enabled is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgresql://giftsync@db.internal/giftsync"),
        ("SHOPIFY_SHOP_DOMAIN", "shop.myshopify.com"),
        ("SHOPIFY_API_VERSION", "2026-07"),
        ("LIGHTSPEED_ACCOUNT_ID", "12345"),
        ("ONSITE_BASE_URL", "https://onsite.example:9630"),
        ("VII_STORE_ID", "42"),
        ("POS_KIND", "none"),
    ],
)
def test_any_configuration_turns_the_automatic_sandbox_off(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    assert "ADMIN_TOKEN: required outside sandbox mode" in problems()


def test_sandbox_true_wins_over_configuration(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("DATABASE_URL", "postgresql://giftsync@127.0.0.1/giftsync")
    settings = load_settings()
    assert settings.sandbox_enabled is True
    # The decision holds when the runtime fills in the simulators afterwards.
    pointed = settings.model_copy(update={"shopify_shop_domain": "x.myshopify.com"})
    assert pointed.sandbox_enabled is True


def test_automatic_sandbox_survives_pointing_at_simulators(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    pointed = settings.model_copy(
        update={"shopify_shop_domain": "giftsync-sandbox.myshopify.com", "vii_base_url": "x"}
    )
    assert pointed.sandbox_enabled is True


def test_shopify_cli_variables_are_not_giftsync_s(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHOPIFY_CLI_PARTNERS_TOKEN", "cli-token")
    clean_env.setenv("SHOPIFY_FLAG_STORE", "shop.myshopify.com")
    assert load_settings().sandbox_enabled is True


# --- misspellings -----------------------------------------------------------------------------


def test_the_issue_s_misspelt_domain_stops_the_start(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://giftsync@db.internal/giftsync")
    clean_env.setenv("SHOPIFY_DOMAIN", "shop.myshopify.com")
    found = problems()
    assert found[0] == "SHOPIFY_DOMAIN: unknown setting, did you mean SHOPIFY_SHOP_DOMAIN?"
    assert "SHOPIFY_SHOP_DOMAIN: required outside sandbox mode" in found


def test_a_misspelling_never_falls_into_the_sandbox(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SHOPIFY_DOMAIN", "shop.myshopify.com")
    assert problems() == ["SHOPIFY_DOMAIN: unknown setting, did you mean SHOPIFY_SHOP_DOMAIN?"]


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("DATABSE_URL", "DATABSE_URL: not a giftsync setting; probably a misspelling of DATABASE_URL"),
        ("ADMIN_TOKN", "ADMIN_TOKN: not a giftsync setting; probably a misspelling of ADMIN_TOKEN"),
        ("PIN_ENCRYPTON_KEY", "PIN_ENCRYPTON_KEY: not a giftsync setting; probably a misspelling of PIN_ENCRYPTION_KEY"),
        ("SANDBX", "SANDBX: not a giftsync setting; probably a misspelling of SANDBOX"),
        ("POLL_INTREVAL", "POLL_INTREVAL: not a giftsync setting; probably a misspelling of POLL_INTERVAL"),
        ("VII_STORE", "VII_STORE: unknown setting, did you mean VII_STORE_ID?"),
        ("LIGHTSPEED_ACCOUNTID", "LIGHTSPEED_ACCOUNTID: unknown setting, did you mean LIGHTSPEED_ACCOUNT_ID?"),
        ("ONSITE_URL", "ONSITE_URL: unknown setting, did you mean ONSITE_BASE_URL?"),
        ("SHOPIFY_API_KEY", "SHOPIFY_API_KEY: unknown setting, did you mean SHOPIFY_CLIENT_ID?"),
    ],
)  # fmt: skip
def test_probable_misspellings_are_named(
    clean_env: pytest.MonkeyPatch, name: str, line: str
) -> None:
    clean_env.setenv(name, "1")
    assert problems()[0] == line


def test_misspellings_in_the_env_file_are_named(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("SANDBOX=true\nCARD_HASH_KY=whatever\n")
    clean_env.chdir(tmp_path)
    assert problems() == [
        "CARD_HASH_KY: not a giftsync setting; probably a misspelling of CARD_HASH_KEY"
    ]


def test_ordinary_variables_are_not_misspellings() -> None:
    common = ["PATH", "LANG", "HOME", "USER", "TERM", "SHELL", "HOSTNAME", "TZ", "PORT", "PWD"]
    assert misspellings([*common, "TEST_DATABASE_URL"], Settings.model_fields) == []


def test_edit_distance_counts_a_swap_as_one() -> None:
    assert edit_distance("POLL_INTERVAL", "POLL_INTREVAL") == 1
    assert edit_distance("SANDBOX", "SANDBX") == 1
    assert edit_distance("SHOPIFY_DOMAIN", "SHOPIFY_SHOP_DOMAIN") == 5
    assert edit_distance("", "ABC") == 3


# --- partial configurations -------------------------------------------------------------------


def test_the_production_base_has_shopify_checkout_auth(production: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.sandbox_enabled is False
    assert settings.checkout_auth is CheckoutAuth.SHOPIFY
    assert settings.shopify_api_version == "2026-07"


def test_shopify_needs_a_client_id_or_an_admin_token(production: pytest.MonkeyPatch) -> None:
    production.delenv("SHOPIFY_CLIENT_ID")
    assert problems() == [
        "SHOPIFY_CLIENT_ID: required outside sandbox mode "
        "(or SHOPIFY_ADMIN_TOKEN, the static token of a legacy admin-created app)"
    ]
    production.setenv("SHOPIFY_ADMIN_TOKEN", "shpat_legacy")
    settings = load_settings()
    assert settings.shopify_client_id is None and settings.shopify_admin_token is not None


def test_shopify_always_needs_its_secret_and_domain(production: pytest.MonkeyPatch) -> None:
    production.setenv("SHOPIFY_ADMIN_TOKEN", "shpat_legacy")
    production.delenv("SHOPIFY_API_SECRET")
    production.delenv("SHOPIFY_SHOP_DOMAIN")
    production.setenv("SHOPIFY_BASE_URL", "https://shop.example")
    assert problems() == [
        "SHOPIFY_SHOP_DOMAIN: required outside sandbox mode",
        "SHOPIFY_API_SECRET: required outside sandbox mode "
        "(webhook signatures, checkout session tokens, app proxy signatures)",
    ]


def test_shop_domain_is_a_host_name(production: pytest.MonkeyPatch) -> None:
    production.setenv("SHOPIFY_SHOP_DOMAIN", "https://shop.myshopify.com/")
    assert problems() == [
        "SHOPIFY_SHOP_DOMAIN: must be the shop's host name, such as your-shop.myshopify.com"
    ]
    production.setenv("SHOPIFY_SHOP_DOMAIN", "Shop.MyShopify.com")
    assert load_settings().shopify_shop_domain == "shop.myshopify.com"


def test_a_partial_vii_configuration_names_what_is_missing(production: pytest.MonkeyPatch) -> None:
    production.setenv("VII_BASE_URL", "https://vii.example/api/")
    assert problems() == [
        "VII_USERNAME: required when any VII_* setting is given",
        "VII_PASSWORD: required when any VII_* setting is given",
        "VII_STORE_ID: required when any VII_* setting is given",
    ]


def test_a_partial_retail_configuration_names_what_is_missing(
    production: pytest.MonkeyPatch,
) -> None:
    production.setenv("POS_KIND", "retail")
    production.setenv("LIGHTSPEED_ACCOUNT_ID", "12345")
    assert problems() == [
        "LIGHTSPEED_CLIENT_ID: required when POS_KIND=retail",
        "LIGHTSPEED_CLIENT_SECRET: required when POS_KIND=retail",
        "LIGHTSPEED_REFRESH_TOKEN: required when POS_KIND=retail",
    ]


def test_a_partial_onsite_configuration_names_what_is_missing(
    production: pytest.MonkeyPatch,
) -> None:
    production.setenv("POS_KIND", "onsite")
    production.setenv("ONSITE_BASE_URL", "https://onsite.example:9630")
    assert problems() == [
        "ONSITE_USERNAME: required when POS_KIND=onsite",
        "ONSITE_PASSWORD: required when POS_KIND=onsite",
        "ONSITE_APP_ID: required when POS_KIND=onsite",
    ]


def test_pos_settings_without_their_pos_kind_are_refused(production: pytest.MonkeyPatch) -> None:
    production.setenv("LIGHTSPEED_ACCOUNT_ID", "12345")
    production.setenv("LIGHTSPEED_CLIENT_ID", "abc")
    assert problems() == [
        "POS_KIND: LIGHTSPEED_ACCOUNT_ID, LIGHTSPEED_CLIENT_ID given but POS_KIND is none; "
        "set POS_KIND=retail or remove them"
    ]


# --- transport ----------------------------------------------------------------------------------


def _onsite(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("POS_KIND", "onsite")
    for name, value in {
        "ONSITE_BASE_URL": url,
        "ONSITE_USERNAME": "giftsync",
        "ONSITE_PASSWORD": "pw",
        "ONSITE_APP_ID": "com.example.giftsync",
    }.items():
        env.setenv(name, value)


@pytest.mark.parametrize(
    "name",
    [
        "SHOPIFY_BASE_URL",
        "LIGHTSPEED_BASE_URL",
        "LIGHTSPEED_TOKEN_URL",
        "VII_BASE_URL",
        "ALERT_WEBHOOK_URL",
        "PUBLIC_URL",
        "ONSITE_BASE_URL",
    ],
)
def test_plain_http_is_refused_outside_the_sandbox(
    production: pytest.MonkeyPatch, name: str
) -> None:
    if name.startswith("LIGHTSPEED"):
        production.setenv("POS_KIND", "retail")
        for setting in ("ACCOUNT_ID", "CLIENT_ID", "CLIENT_SECRET", "REFRESH_TOKEN"):
            production.setenv(f"LIGHTSPEED_{setting}", "x1")
    if name.startswith("VII"):
        for setting in ("USERNAME", "PASSWORD", "STORE_ID"):
            production.setenv(f"VII_{setting}", "x1")
    if name.startswith("ONSITE"):
        _onsite(production, "https://onsite.example")
    production.setenv(name, "http://upstream.example/path")
    assert problems() == [
        f"{name}: must be https outside sandbox mode "
        "(plain http only to a loopback address such as 127.0.0.1)"
    ]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8104/", "http://127.8.9.10/", "http://localhost:1", "http://[::1]:80"]
)
def test_loopback_may_be_plain_http_with_a_warning(
    production: pytest.MonkeyPatch, url: str
) -> None:
    production.setenv("ALERT_WEBHOOK_URL", url)
    settings = load_settings()
    assert settings.alert_webhook_url == url
    assert settings.warnings() == [
        "ALERT_WEBHOOK_URL: plain http to a loopback address (a local fake?)"
    ]


def test_the_sandbox_may_use_plain_http(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("VII_BASE_URL", "http://vii.example/")
    assert load_settings().vii_base_url == "http://vii.example/"


@pytest.mark.parametrize(
    "url", ["ftp://vii.example/", "vii.example", "https://", "https://x:port/"]
)
def test_malformed_urls_are_refused_in_every_mode(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("ALERT_WEBHOOK_URL", url)
    assert problems() == ["ALERT_WEBHOOK_URL: must be an absolute https:// URL"]


def test_onsite_may_turn_tls_verification_off_with_a_warning(
    production: pytest.MonkeyPatch,
) -> None:
    _onsite(production, "https://onsite.example:9630")
    production.setenv("ONSITE_VERIFY_TLS", "false")
    settings = load_settings()
    assert settings.onsite_verify_tls is False
    assert settings.warnings() == [
        "ONSITE_VERIFY_TLS: false; the OnSite server's TLS certificate is not verified"
    ]


def test_open_checkout_outside_the_sandbox_is_a_warning(production: pytest.MonkeyPatch) -> None:
    production.setenv("CHECKOUT_AUTH", "open")
    settings = load_settings()
    assert settings.checkout_auth is CheckoutAuth.OPEN
    assert settings.warnings() == [
        "CHECKOUT_AUTH: open outside sandbox mode; anyone can call the checkout endpoints "
        "without a Shopify session token or app proxy signature"
    ]


def test_checkout_auth_shopify_in_the_sandbox_and_bad_values(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("CHECKOUT_AUTH", "shopify")
    assert load_settings().checkout_auth is CheckoutAuth.SHOPIFY
    clean_env.setenv("CHECKOUT_AUTH", "none")
    assert [line.split(":", 1)[0] for line in problems()] == ["CHECKOUT_AUTH"]


# --- the other new settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        ("2025-01", "SHOPIFY_API_VERSION: 2025-01 is older than 2026-07, the oldest version "
         "giftsync speaks (initialAmount and bulkOperations exist from it on)"),
        ("2026-04", "SHOPIFY_API_VERSION: 2026-04 is older than 2026-07, the oldest version "
         "giftsync speaks (initialAmount and bulkOperations exist from it on)"),
        ("2026-08", "SHOPIFY_API_VERSION: must be a stable Shopify API version such as 2026-07 "
         "(year-month, months 01, 04, 07, 10)"),
        ("unstable", "SHOPIFY_API_VERSION: must be a stable Shopify API version such as 2026-07 "
         "(year-month, months 01, 04, 07, 10)"),
        ("2026-7", "SHOPIFY_API_VERSION: must be a stable Shopify API version such as 2026-07 "
         "(year-month, months 01, 04, 07, 10)"),
    ],
)  # fmt: skip
def test_old_or_malformed_api_versions_are_refused(
    clean_env: pytest.MonkeyPatch, raw: str, line: str
) -> None:
    clean_env.setenv("SANDBOX", "true")
    clean_env.setenv("SHOPIFY_API_VERSION", raw)
    assert problems() == [line]


def test_newer_api_versions_are_accepted(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SANDBOX", "true")
    assert load_settings().shopify_api_version == "2026-07"
    clean_env.setenv("SHOPIFY_API_VERSION", "2027-01")
    assert load_settings().shopify_api_version == "2027-01"


def test_trusted_proxies_are_networks(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().trusted_proxies == ()
    clean_env.setenv("TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.7 ,fd00::/8,,")
    settings = load_settings()
    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert settings.is_trusted_proxy("10.20.30.40") is True
    assert settings.is_trusted_proxy("192.168.1.8") is False
    assert settings.is_trusted_proxy("fd00::1") is True
    assert settings.is_trusted_proxy("::ffff:10.1.2.3") is True
    assert settings.is_trusted_proxy("not-an-address") is False
    clean_env.setenv("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
    assert problems() == [
        "TRUSTED_PROXIES: 'proxy.internal' is not an IP address or CIDR such as 10.0.0.0/8"
    ]


def test_alert_interval_and_log_json(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.alert_interval == timedelta(hours=1)
    assert settings.log_json is None
    assert settings.alert_webhook_url is None
    clean_env.setenv("ALERT_INTERVAL", "PT15M")
    clean_env.setenv("LOG_JSON", "false")
    settings = load_settings()
    assert settings.alert_interval == timedelta(minutes=15)
    assert settings.log_json is False


def test_pos_set_up_settings(production: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.lightspeed_shop_id is None
    assert settings.onsite_gift_card_product_code == "GIFTCARD"
    assert settings.onsite_payment_method == "giftsync online"
    production.setenv("POS_KIND", "retail")
    for name, value in {
        "LIGHTSPEED_ACCOUNT_ID": "12345",
        "LIGHTSPEED_CLIENT_ID": "client",
        "LIGHTSPEED_CLIENT_SECRET": "secret",
        "LIGHTSPEED_REFRESH_TOKEN": "refresh",
        "LIGHTSPEED_SHOP_ID": "1",
        "LIGHTSPEED_REGISTER_ID": "2",
        "LIGHTSPEED_EMPLOYEE_ID": "3",
        "LIGHTSPEED_PAYMENT_TYPE_ID": "11",
    }.items():
        production.setenv(name, value)
    settings = load_settings()
    assert (
        settings.lightspeed_shop_id,
        settings.lightspeed_register_id,
        settings.lightspeed_employee_id,
        settings.lightspeed_payment_type_id,
    ) == ("1", "2", "3", "11")
    production.setenv("LIGHTSPEED_REGISTER_ID", "eCom")
    assert problems() == ["LIGHTSPEED_REGISTER_ID: must be a Lightspeed id (digits only)"]


def test_public_url_loses_its_trailing_slash(production: pytest.MonkeyPatch) -> None:
    production.setenv("PUBLIC_URL", "https://giftsync.example.com/")
    assert load_settings().public_url == "https://giftsync.example.com"
