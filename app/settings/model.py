"""The settings themselves, exactly as DESIGN section 4 names them, and how they are loaded.

Every problem is reported on its own line naming the setting, and no secret value is ever part
of a message: pydantic's own error text can echo the input, so messages are rebuilt here.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import (
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.settings.environment import scan
from app.settings.strength import OWN_SECRETS, judge_secrets
from app.settings.values import (
    BalanceSign,
    CheckoutAuth,
    Duration,
    Money,
    Networks,
    Plan,
    PosKind,
    check_api_version,
    check_host_name,
    check_url,
    is_loopback_url,
    url_scheme,
)

ONSITE_REQUIRED = ("onsite_base_url", "onsite_username", "onsite_password", "onsite_app_id")
VII_REQUIRED = ("vii_base_url", "vii_username", "vii_password", "vii_store_id")
LIGHTSPEED_REQUIRED = (
    "lightspeed_account_id",
    "lightspeed_client_id",
    "lightspeed_client_secret",
    "lightspeed_refresh_token",
)
# Upstream and outward addresses: https outside the sandbox, loopback excepted (local fakes).
URL_SETTINGS = (
    "shopify_base_url",
    "lightspeed_base_url",
    "lightspeed_token_url",
    "onsite_base_url",
    "vii_base_url",
    "alert_webhook_url",
    "public_url",
)
# Any of these given (environment, `.env` or arguments) means "configured": no automatic sandbox.
_UPSTREAM_PREFIXES = ("shopify_", "lightspeed_", "onsite_", "vii_")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
        # `NAME=` in a `.env` template means "not set", not an empty secret or URL.
        env_ignore_empty=True,
    )

    database_url: str | None = None
    data_dir: Path = Path(".data")
    admin_token: SecretStr | None = None
    card_hash_key: SecretStr | None = None
    pin_encryption_key: SecretStr | None = None

    shopify_shop_domain: str | None = None
    shopify_client_id: str | None = None
    shopify_api_secret: SecretStr | None = None
    shopify_admin_token: SecretStr | None = None
    shopify_api_version: str = "2026-07"
    shopify_base_url: str | None = None
    public_url: str | None = None
    checkout_auth: CheckoutAuth | None = None
    trusted_proxies: Networks = ()
    alert_webhook_url: str | None = None
    alert_interval: Duration = timedelta(hours=1)

    pos_kind: PosKind = PosKind.NONE
    lightspeed_account_id: str | None = None
    lightspeed_client_id: str | None = None
    lightspeed_client_secret: SecretStr | None = None
    lightspeed_refresh_token: SecretStr | None = None
    lightspeed_base_url: str = "https://api.lightspeedapp.com"
    lightspeed_token_url: str = "https://cloud.lightspeedapp.com/auth/oauth/token"  # noqa: S105
    lightspeed_balance_sign: BalanceSign = BalanceSign.NEGATIVE
    lightspeed_shop_id: str | None = None
    lightspeed_register_id: str | None = None
    lightspeed_employee_id: str | None = None
    lightspeed_payment_type_id: str | None = None

    onsite_base_url: str | None = None
    onsite_username: str | None = None
    onsite_password: SecretStr | None = None
    onsite_app_id: str | None = None
    onsite_private_id: SecretStr | None = None
    onsite_verify_tls: bool = True
    # What the OnSite client used before these were settings; `/readyz` checks they exist.
    onsite_gift_card_product_code: str = "GIFTCARD"
    onsite_payment_method: str = "giftsync online"

    vii_base_url: str | None = None
    vii_username: str | None = None
    vii_password: SecretStr | None = None
    vii_store_id: str | None = None

    create_update_shopify_gift_cards: bool = False
    send_gift_card_notifications: bool = False
    download_shopify_gift_cards: bool = False
    shopify_serial_prefix: str = "1000"
    plan: Plan = Plan.ENTERPRISE

    shadow_card_ttl: Duration = timedelta(hours=24)
    poll_interval: Duration = timedelta(seconds=10)
    reconcile_interval: Duration = timedelta(hours=1)
    max_cart_total: Money = Decimal("10000.00")
    currency: str = "AUD"

    sandbox: bool | None = None
    log_level: str = "INFO"
    # None: JSON when stderr is not a terminal (app.logging decides at configuration).
    log_json: bool | None = None

    # Decided once, from what was given: a later model_copy filling in simulators keeps it.
    _nothing_configured: bool = PrivateAttr(default=True)

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise ValueError("must be a three-letter ISO 4217 code such as AUD")
        return value.upper()

    @field_validator("shopify_serial_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"\d{4}", value):
            raise ValueError("must be exactly 4 digits")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("postgresql://", "postgresql+asyncpg://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("shopify_api_version")
    @classmethod
    def _api_version(cls, value: str) -> str:
        return check_api_version(value)

    @field_validator("shopify_shop_domain")
    @classmethod
    def _shop_domain(cls, value: str | None) -> str | None:
        return check_host_name(value)

    @field_validator(*URL_SETTINGS)
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        checked = check_url(value)
        # Only our own address is joined to paths here; upstream URLs stay as given.
        if checked is not None and info.field_name == "public_url":
            return checked.rstrip("/")
        return checked

    @field_validator(
        "lightspeed_shop_id",
        "lightspeed_register_id",
        "lightspeed_employee_id",
        "lightspeed_payment_type_id",
    )
    @classmethod
    def _lightspeed_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+", value.strip()):
            raise ValueError("must be a Lightspeed id (digits only)")
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        given = self.model_fields_set
        self._nothing_configured = not (
            self.database_url is not None
            or "pos_kind" in given
            or any(name.startswith(_UPSTREAM_PREFIXES) for name in given)
        )
        if self.checkout_auth is None:
            self.checkout_auth = CheckoutAuth.OPEN if self.sandbox_enabled else CheckoutAuth.SHOPIFY
        problems: list[str] = []
        if not self.sandbox_enabled:
            problems += _missing_outside_sandbox(self)
            problems += _partial_upstreams(self)
            problems += _transport(self)
        # Judged here rather than per field, so weak and missing secrets show up together.
        problems += judge_secrets(self._own_secrets())
        problems += _merchant_rules(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _own_secrets(self) -> dict[str, str]:
        return {
            name: value.get_secret_value()
            for name in OWN_SECRETS
            if (value := getattr(self, name.lower())) is not None
        }

    def missing(self, *names: str) -> list[str]:
        """The setting names (as spelled in the environment) among `names` that are unset."""
        return [name.upper() for name in names if getattr(self, name) is None]

    @property
    def sandbox_enabled(self) -> bool:
        """SANDBOX when given; otherwise on exactly when nothing at all was configured."""
        if self.sandbox is not None:
            return self.sandbox
        return self._nothing_configured

    @property
    def shopify_url(self) -> str:
        if self.shopify_base_url:
            return self.shopify_base_url.rstrip("/")
        return f"https://{self.shopify_shop_domain}"

    def is_trusted_proxy(self, address: str) -> bool:
        """Whether `address` lies in TRUSTED_PROXIES; anything unparsable is not trusted."""
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip in network for network in self.trusted_proxies)

    def warnings(self) -> list[str]:
        """Allowed but worth a `/readyz` warning: one line each, naming the setting."""
        if self.sandbox_enabled:
            return []
        found: list[str] = []
        if self.checkout_auth is CheckoutAuth.OPEN:
            found.append(
                "CHECKOUT_AUTH: open outside sandbox mode; anyone can call the checkout "
                "endpoints without a Shopify session token or app proxy signature"
            )
        if not self.onsite_verify_tls:
            found.append(
                "ONSITE_VERIFY_TLS: false; the OnSite server's TLS certificate is not verified"
            )
        for name in URL_SETTINGS:
            url = getattr(self, name)
            if url is not None and url_scheme(url) == "http":
                found.append(f"{name.upper()}: plain http to a loopback address (a local fake?)")
        return found


def _missing_outside_sandbox(settings: Settings) -> list[str]:
    problems = [
        f"{name}: required outside sandbox mode"
        for name in settings.missing("admin_token", "card_hash_key", "pin_encryption_key")
    ]
    if settings.shopify_shop_domain is None:
        problems.append("SHOPIFY_SHOP_DOMAIN: required outside sandbox mode")
    if settings.shopify_client_id is None and settings.shopify_admin_token is None:
        problems.append(
            "SHOPIFY_CLIENT_ID: required outside sandbox mode "
            "(or SHOPIFY_ADMIN_TOKEN, the static token of a legacy admin-created app)"
        )
    if settings.shopify_api_secret is None:
        problems.append(
            "SHOPIFY_API_SECRET: required outside sandbox mode "
            "(webhook signatures, checkout session tokens, app proxy signatures)"
        )
    if settings.pos_kind is PosKind.RETAIL:
        problems += [
            f"{name}: required when POS_KIND=retail"
            for name in settings.missing(*LIGHTSPEED_REQUIRED)
        ]
    if settings.pos_kind is PosKind.ONSITE:
        problems += [
            f"{name}: required when POS_KIND=onsite" for name in settings.missing(*ONSITE_REQUIRED)
        ]
    return problems


def _partial_upstreams(settings: Settings) -> list[str]:
    """Settings of an upstream that is not switched on, or switched on half-way."""
    given = settings.model_fields_set
    problems: list[str] = []
    if any(name.startswith("vii_") for name in given):
        problems += [
            f"{name}: required when any VII_* setting is given"
            for name in settings.missing(*VII_REQUIRED)
        ]
    for prefix, kind in (("lightspeed_", PosKind.RETAIL), ("onsite_", PosKind.ONSITE)):
        named = sorted(name.upper() for name in given if name.startswith(prefix))
        if named and settings.pos_kind is not kind:
            problems.append(
                f"POS_KIND: {', '.join(named)} given but POS_KIND is {settings.pos_kind.value}; "
                f"set POS_KIND={kind.value} or remove them"
            )
    return problems


def _transport(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name in URL_SETTINGS:
        url = getattr(settings, name)
        if url is not None and url_scheme(url) != "https" and not is_loopback_url(url):
            problems.append(
                f"{name.upper()}: must be https outside sandbox mode "
                "(plain http only to a loopback address such as 127.0.0.1)"
            )
    return problems


def _merchant_rules(settings: Settings) -> list[str]:
    problems: list[str] = []
    if settings.plan is Plan.GROWTH:
        for name in ("create_update_shopify_gift_cards", "send_gift_card_notifications"):
            if getattr(settings, name):
                problems.append(
                    f"{name.upper()}: not available on PLAN=growth "
                    "(growth allows DOWNLOAD_SHOPIFY_GIFT_CARDS and SHOPIFY_SERIAL_PREFIX only)"
                )
    if settings.send_gift_card_notifications and not settings.create_update_shopify_gift_cards:
        problems.append("SEND_GIFT_CARD_NOTIFICATIONS: needs CREATE_UPDATE_SHOPIFY_GIFT_CARDS=true")
    if settings.pos_kind is PosKind.NONE and (
        settings.create_update_shopify_gift_cards or settings.download_shopify_gift_cards
    ):
        problems.append("POS_KIND: omni sync is switched on but POS_KIND=none")
    return problems


class SettingsError(Exception):
    """Raised with one line per problem, each naming the setting, never its value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _describe(error: Any) -> list[str]:
    location = ".".join(str(part) for part in error.get("loc", ())).upper()
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    lines = message.splitlines() or ["invalid value"]
    if not location:
        return lines
    # A validator that found several problems already names the setting on each line.
    return [line if line.startswith(f"{location}:") else f"{location}: {line}" for line in lines]


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise SettingsError; the messages carry setting names, not values.

    Probable misspellings among the variables giftsync can see come first: they usually explain
    the missing settings that follow them.
    """
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    problems = scan(Settings.model_fields, env_file)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            problems.extend(_describe(error))
    if problems:
        raise SettingsError(problems)
    return settings
