"""The merchant settings of DESIGN 1.A, changeable in the console without a restart (DESIGN 4).

A value saved in the console (table `merchant_settings`) outranks the environment until it is
reset. The layer works on the process's one live `Settings` object: the flows (omni sync,
reconcile, backfill, `/readyz`) hold that same object and read these fields on every use, so a
value written into it in place takes effect on their next read. The process that saves applies
at once; every other process picks the change up at its next `refresh` (a schedule).

A combination the environment's rules refuse (a switch that PLAN=growth does not allow, say) is
never saved; a stored combination that became invalid because the environment changed is not
applied, and the console names the problem.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import operators
from app.db.engine import SessionFactory, transaction
from app.db.locks import lock_for_transaction
from app.db.sql import sql
from app.logging import get_logger
from app.settings import Plan, Settings
from app.settings.model import _merchant_rules

log = get_logger(__name__)

Value = bool | str
Source = Literal["console", "environment", "default"]
BOOLEANS = (
    "create_update_shopify_gift_cards",
    "send_gift_card_notifications",
    "download_shopify_gift_cards",
)
NAMES = (*BOOLEANS, "shopify_serial_prefix", "plan")
LABELS = {
    "create_update_shopify_gift_cards": "Create/Update Shopify gift cards",
    "send_gift_card_notifications": "Send gift card notifications",
    "download_shopify_gift_cards": "Download Shopify gift cards",
    "shopify_serial_prefix": "Serial prefix",
    "plan": "Plan",
}
HELP = {
    "create_update_shopify_gift_cards": "Cards sold or changed on the POS go to Shopify.",
    "send_gift_card_notifications": "Shopify emails a POS card's customer once it is created.",
    "download_shopify_gift_cards": "Cards bought online go to the POS.",
    "shopify_serial_prefix": "4 digits that start the POS serial of a card bought online.",
    "plan": "growth: download and prefix only; enterprise: everything.",
}
_PREFIX = re.compile(r"[0-9]{4}")


def parse(name: str, raw: str) -> Value:
    """A stored or submitted value; ValueError names what is wrong, never echoes much input."""
    if name in BOOLEANS:
        if raw in ("true", "false"):
            return raw == "true"
        raise ValueError(f"{name.upper()}: must be true or false")
    if name == "shopify_serial_prefix":
        if not _PREFIX.fullmatch(raw):
            raise ValueError("SHOPIFY_SERIAL_PREFIX: must be exactly 4 digits")
        return raw
    if name == "plan":
        if raw not in {plan.value for plan in Plan}:
            raise ValueError("PLAN: must be growth or enterprise")
        return raw
    raise ValueError(f"{name}: not a merchant setting")


def encode(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _live(name: str, value: Value) -> Any:
    """The type the Settings field holds."""
    return Plan(str(value)) if name == "plan" else value


@dataclass(frozen=True)
class Stored:
    value: str
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class Shown:
    """One setting as the console shows it: its value now and where that comes from."""

    name: str
    label: str
    help: str
    value: Value
    source: Source
    environment_value: Value
    updated_by: str | None
    updated_at: datetime | None

    @property
    def env_name(self) -> str:
        return self.name.upper()


class HasSettings(Protocol):
    settings: Settings


class MerchantSettings:
    """The override layer over one process's live settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.environment: dict[str, Value] = {
            name: encode_live(getattr(settings, name)) for name in NAMES
        }
        self.given = {name for name in NAMES if name in settings.model_fields_set}
        self.stored: dict[str, Stored] = {}
        """The overrides in force here."""
        self.seen: dict[str, Stored] = {}
        """What the table held at the last look (not applied when `problems`)."""
        self.problems: list[str] = []

    def values_with(self, stored: dict[str, Value]) -> dict[str, Value]:
        return {**self.environment, **stored}

    def check(self, stored: dict[str, Value]) -> list[str]:
        """The environment's own rules (DESIGN 1.A) applied to the result of these overrides."""
        values = self.values_with(stored)
        candidate = self.settings.model_copy(
            update={name: _live(name, value) for name, value in values.items()}
        )
        return _merchant_rules(candidate)

    def apply(self, stored: dict[str, Stored]) -> list[str]:
        """Write the overrides into the live settings, unless together they break a rule."""
        parsed: dict[str, Value] = {}
        problems: list[str] = []
        for name, row in stored.items():
            try:
                parsed[name] = parse(name, row.value)
            except ValueError as error:
                problems.append(f"{error} (stored value ignored)")
        broken = self.check(parsed)
        problems += broken
        self.problems = problems
        self.seen = dict(stored)
        if broken:
            log.warning("merchant_settings_not_applied", problems=problems)
            return problems
        for name, value in self.values_with(parsed).items():
            if getattr(self.settings, name) != _live(name, value):
                setattr(self.settings, name, _live(name, value))
        self.stored = dict(stored)
        return problems

    def shown(self) -> list[Shown]:
        rows: list[Shown] = []
        for name in NAMES:
            stored = self.stored.get(name)
            source: Source = (
                "console" if stored else "environment" if name in self.given else "default"
            )
            rows.append(
                Shown(
                    name=name,
                    label=LABELS[name],
                    help=HELP[name],
                    value=encode_live(getattr(self.settings, name)),
                    source=source,
                    environment_value=self.environment[name],
                    updated_by=stored.updated_by if stored else None,
                    updated_at=stored.updated_at if stored else None,
                )
            )
        return rows

    async def refresh(self, sessions: SessionFactory) -> list[str]:
        """Read what the console saved (in any process) and apply it here."""
        async with transaction(sessions) as session:
            stored = await _read(session)
        if stored != self.seen:
            return self.apply(stored)
        return self.problems

    async def save(
        self,
        sessions: SessionFactory,
        changes: dict[str, Value | None],
        *,
        operator: str,
        address: str,
    ) -> list[str]:
        """Save `changes` (None: reset to the environment); the problems, or [] when saved.

        Checked against everything stored under a lock, so two operators saving at once cannot
        together store a combination the rules refuse. The change is audited with its values.
        """
        unknown = sorted(set(changes) - set(NAMES))
        if unknown:
            raise ValueError(f"not merchant settings: {', '.join(unknown)}")
        async with transaction(sessions) as session:
            await lock_for_transaction(session, "merchant-settings")
            stored = await _read(session)
            wanted = {name: parse(name, row.value) for name, row in stored.items()}
            for name, value in changes.items():
                if value is None:
                    wanted.pop(name, None)
                else:
                    wanted[name] = value
            problems = self.check(wanted)
            if problems:
                return problems
            await _write(session, stored, changes, operator)
            await operators.audit(
                session,
                operator=operator,
                address=address,
                action="merchant_settings.save",
                status=200,
                body=b"",
                detail={
                    "set": {n: encode(v) for n, v in changes.items() if v is not None},
                    "reset": sorted(n for n, v in changes.items() if v is None),
                },
            )
            stored = await _read(session)
        self.apply(stored)
        log.info("merchant_settings_saved", operator=operator, names=sorted(changes))
        return []


def encode_live(value: Any) -> Value:
    """A live Settings value in the layer's terms (bools stay bools, the rest are strings)."""
    return value if isinstance(value, bool) else str(value)


async def _read(session: AsyncSession) -> dict[str, Stored]:
    rows = await session.execute(
        sql("SELECT name, value, updated_by, updated_at FROM merchant_settings")
    )
    return {row.name: Stored(row.value, row.updated_by, row.updated_at) for row in rows.all()}


async def _write(
    session: AsyncSession,
    stored: dict[str, Stored],
    changes: dict[str, Value | None],
    operator: str,
) -> None:
    for name, value in changes.items():
        if value is None:
            await session.execute(sql("DELETE FROM merchant_settings WHERE name = :n"), {"n": name})
        elif name not in stored or stored[name].value != encode(value):
            await session.execute(
                sql(
                    """
                    INSERT INTO merchant_settings (name, value, updated_by)
                    VALUES (:n, :v, :by)
                    ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value,
                        updated_by = EXCLUDED.updated_by, updated_at = now()
                    """
                ),
                {"n": name, "v": encode(value), "by": operator},
            )


def merchant_settings(holder: HasSettings) -> MerchantSettings:
    """The layer of this runtime, made on first use (before any override touched the settings).

    Kept on the runtime as `merchant`; made again if the runtime's settings object was
    replaced (tests do), since the layer must work on the object the flows hold.
    """
    layer: MerchantSettings | None = getattr(holder, "merchant", None)
    if layer is None or layer.settings is not holder.settings:
        layer = MerchantSettings(holder.settings)
        setattr(holder, "merchant", layer)  # noqa: B010 - a field the runtime may not declare
    return layer


def effective_settings(holder: HasSettings) -> Settings:
    """The settings with the console's overrides applied: the runtime's live object itself."""
    return merchant_settings(holder).settings


async def apply_stored(holder: HasSettings, sessions: SessionFactory) -> list[str]:
    """At start: apply what the console saved before the process began."""
    return await merchant_settings(holder).refresh(sessions)


async def keep_fresh(
    holder: HasSettings,
    sessions: SessionFactory,
    every: timedelta,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Re-read the saved settings every `every`, for as long as the process runs.

    Per process, not a worker schedule: schedules run on one process at a time, and every
    process holds its own settings. A failed look is retried at the next one.
    """
    while True:
        await sleep(max(every.total_seconds(), 1.0))
        try:
            await merchant_settings(holder).refresh(sessions)
        except Exception as exc:
            log.warning("merchant_settings_refresh_failed", error=type(exc).__name__)
