"""Configuration from the environment and `.env`, exactly as DESIGN section 4 names it.

Every problem is reported on its own line naming the setting, and no secret value is ever part
of a message: pydantic's own error text can echo the input, so messages are rebuilt here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

_ISO_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(raw: object) -> timedelta:
    """Seconds (`90`) or an ISO 8601 duration (`PT24H`, `P1DT2H`); nothing else."""
    if isinstance(raw, timedelta):
        return raw
    if isinstance(raw, bool):
        raise ValueError("expected seconds or an ISO 8601 duration")
    if isinstance(raw, int | float | Decimal):
        seconds = Decimal(str(raw))
    else:
        text = str(raw).strip().upper()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = Decimal(text)
        else:
            match = _ISO_DURATION.fullmatch(text)
            if match is None or text in {"P", "PT"} or text.endswith("T"):
                raise ValueError("expected seconds (90) or an ISO 8601 duration (PT24H)")
            parts = {k: Decimal(v) for k, v in match.groupdict().items() if v}
            seconds = (
                parts.get("days", Decimal(0)) * 86400
                + parts.get("hours", Decimal(0)) * 3600
                + parts.get("minutes", Decimal(0)) * 60
                + parts.get("seconds", Decimal(0))
            )
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=float(seconds))


def parse_money(raw: object) -> Decimal:
    """A decimal string with at most two places; floats are refused so no binary rounding sneaks in."""
    if isinstance(raw, float):
        raise ValueError("give money as a decimal string such as 5000.00")
    value = Decimal(str(raw).strip())
    if not value.is_finite() or value < 0:
        raise ValueError("must be a positive decimal amount")
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError("at most two decimal places")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Money = Annotated[Decimal, BeforeValidator(parse_money)]


class PosKind(StrEnum):
    RETAIL = "retail"
    ONSITE = "onsite"
    NONE = "none"


class BalanceSign(StrEnum):
    NEGATIVE = "negative"
    POSITIVE = "positive"


class Plan(StrEnum):
    GROWTH = "growth"
    ENTERPRISE = "enterprise"


ONSITE_REQUIRED = ("onsite_base_url", "onsite_username", "onsite_password", "onsite_app_id")
VII_REQUIRED = ("vii_base_url", "vii_username", "vii_password", "vii_store_id")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
    )

    database_url: str | None = None
    data_dir: Path = Path(".data")
    admin_token: SecretStr | None = None
    card_hash_key: SecretStr | None = None
    pin_encryption_key: SecretStr | None = None

    shopify_shop_domain: str | None = None
    shopify_admin_token: SecretStr | None = None
    shopify_api_version: str = "2025-01"
    shopify_api_secret: SecretStr | None = None
    shopify_base_url: str | None = None

    pos_kind: PosKind = PosKind.NONE
    lightspeed_account_id: str | None = None
    lightspeed_client_id: str | None = None
    lightspeed_client_secret: SecretStr | None = None
    lightspeed_refresh_token: SecretStr | None = None
    lightspeed_base_url: str = "https://api.lightspeedapp.com"
    lightspeed_token_url: str = "https://cloud.lightspeedapp.com/auth/oauth/token"  # noqa: S105
    lightspeed_balance_sign: BalanceSign = BalanceSign.NEGATIVE

    onsite_base_url: str | None = None
    onsite_username: str | None = None
    onsite_password: SecretStr | None = None
    onsite_app_id: str | None = None
    onsite_private_id: SecretStr | None = None
    onsite_verify_tls: bool = True

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

    trusted_proxies: str = ""
    """Addresses or CIDRs, comma-separated, whose X-Forwarded-For is believed."""

    sandbox: bool | None = None
    log_level: str = "INFO"
    log_json: bool = True

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

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems: list[str] = []
        if not self.sandbox_enabled:
            for name in self.missing("admin_token", "card_hash_key", "pin_encryption_key"):
                problems.append(f"{name}: required outside sandbox mode")
            if self.shopify_shop_domain is None and self.shopify_base_url is None:
                problems.append("SHOPIFY_SHOP_DOMAIN: required outside sandbox mode")
            if self.shopify_admin_token is None:
                problems.append("SHOPIFY_ADMIN_TOKEN: required outside sandbox mode")
            if self.shopify_api_secret is None:
                problems.append("SHOPIFY_API_SECRET: required to verify webhooks")
            if self.pos_kind is PosKind.RETAIL:
                for name in self.missing(
                    "lightspeed_account_id",
                    "lightspeed_client_id",
                    "lightspeed_client_secret",
                    "lightspeed_refresh_token",
                ):
                    problems.append(f"{name}: required when POS_KIND=retail")
            if self.pos_kind is PosKind.ONSITE:
                for name in self.missing(*ONSITE_REQUIRED):
                    problems.append(f"{name}: required when POS_KIND=onsite")
            if self.vii_base_url is not None:
                for name in self.missing(*VII_REQUIRED[1:]):
                    problems.append(f"{name}: required when VII_BASE_URL is set")
        if self.pin_encryption_key is not None:
            try:
                decode_key(self.pin_encryption_key.get_secret_value())
            except ValueError as exc:
                problems.append(f"PIN_ENCRYPTION_KEY: {exc}")
        if self.card_hash_key is not None and len(self.card_hash_key.get_secret_value()) < 16:
            problems.append("CARD_HASH_KEY: must be at least 16 characters")
        if self.admin_token is not None and len(self.admin_token.get_secret_value()) < 16:
            problems.append("ADMIN_TOKEN: must be at least 16 characters")
        if self.plan is Plan.GROWTH:
            for name in ("create_update_shopify_gift_cards", "send_gift_card_notifications"):
                if getattr(self, name):
                    problems.append(
                        f"{name.upper()}: not available on PLAN=growth "
                        "(growth allows DOWNLOAD_SHOPIFY_GIFT_CARDS and SHOPIFY_SERIAL_PREFIX only)"
                    )
        if self.send_gift_card_notifications and not self.create_update_shopify_gift_cards:
            problems.append(
                "SEND_GIFT_CARD_NOTIFICATIONS: needs CREATE_UPDATE_SHOPIFY_GIFT_CARDS=true"
            )
        if self.pos_kind is PosKind.NONE and (
            self.create_update_shopify_gift_cards or self.download_shopify_gift_cards
        ):
            problems.append("POS_KIND: omni sync is switched on but POS_KIND=none")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def missing(self, *names: str) -> list[str]:
        """The setting names (as spelled in the environment) among `names` that are unset."""
        return [name.upper() for name in names if getattr(self, name) is None]

    @cached_property
    def sandbox_enabled(self) -> bool:
        """SANDBOX when given; otherwise on exactly when no upstream is configured."""
        if self.sandbox is not None:
            return self.sandbox
        return not any(
            (
                self.shopify_shop_domain,
                self.shopify_base_url,
                self.vii_base_url,
                self.lightspeed_account_id,
                self.onsite_base_url,
            )
        )

    @property
    def shopify_url(self) -> str:
        if self.shopify_base_url:
            return self.shopify_base_url.rstrip("/")
        return f"https://{self.shopify_shop_domain}"


def decode_key(raw: str) -> bytes:
    """A 32-byte AES key given as 64 hex characters or base64; a long passphrase is stretched.

    Passphrases are accepted because operators paste them from secret managers; under 32
    characters there is too little entropy to be worth an AES-256 key.
    """
    text = raw.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == 32:
        return decoded
    if len(text) >= 32:
        return hashlib.sha256(b"giftsync-pin-key:" + text.encode()).digest()
    raise ValueError(
        "must be 32 bytes as 64 hex characters or base64, or a passphrase of 32+ characters"
    )


class SettingsError(Exception):
    """Raised with one line per problem, each naming the setting, never its value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _describe(error: Any) -> list[str]:
    location = ".".join(str(part) for part in error.get("loc", ())) or ""
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if not location:
        return message.splitlines()
    return [f"{location.upper()}: {message}"]


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise SettingsError; the messages carry setting names, not values."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_input=False, include_url=False):
            problems.extend(_describe(error))
        raise SettingsError(problems) from None
