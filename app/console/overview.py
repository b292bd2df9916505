"""What the console's Overview shows: each sync direction, the queue, findings, the last runs,
the Shopify API version, token health and upstream status (issue 17).

Read from the database and the live settings; upstream status is `/readyz`'s own report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.db import lists
from app.db.engine import transaction
from app.db.sql import sql
from app.readiness import readiness
from app.settings import PosKind
from app.sync.omni import SHOPIFY_POLLER
from app.sync.pos.setup import pos_setup_checks


@dataclass(frozen=True)
class Direction:
    label: str
    setting: str
    on: bool
    cursor: str | None
    """The `sync_cursors` row whose last move is the direction's last successful poll."""
    last_poll: datetime | None


@dataclass(frozen=True)
class TokenHealth:
    provider: str
    state: str
    detail: str


@dataclass(frozen=True)
class Overview:
    pos_kind: str
    directions: list[Direction]
    queued: int
    running: int
    dead: int
    open_findings: dict[str, int]
    last_reconcile: lists.RunRow | None
    last_backfill: lists.RunRow | None
    api_version: str
    api_version_answered: str | None
    tokens: list[TokenHealth]
    ready: dict[str, Any]

    @property
    def open_findings_total(self) -> int:
        return sum(self.open_findings.values())


def _directions(runtime: Any, cursors: dict[str, datetime]) -> list[Direction]:
    settings = runtime.settings
    pos = settings.pos_kind is not PosKind.NONE
    pollers = runtime.pollers
    pos_cursor = pollers.pos_cursor if pollers is not None else None
    shopify_cursor = SHOPIFY_POLLER
    return [
        Direction(
            "POS → Shopify",
            "CREATE_UPDATE_SHOPIFY_GIFT_CARDS",
            pos and settings.create_update_shopify_gift_cards,
            pos_cursor,
            cursors.get(pos_cursor or ""),
        ),
        Direction(
            "Shopify → POS",
            "DOWNLOAD_SHOPIFY_GIFT_CARDS",
            pos and settings.download_shopify_gift_cards,
            shopify_cursor,
            cursors.get(shopify_cursor),
        ),
        Direction(
            "Gift card notifications",
            "SEND_GIFT_CARD_NOTIFICATIONS",
            pos and settings.send_gift_card_notifications,
            None,
            None,
        ),
    ]


def _token_health(rows: list[Any], settings: Any) -> list[TokenHealth]:
    now = datetime.now(UTC)
    found = []
    for row in rows:
        if row.expires_at is None or row.expires_at > now:
            state, detail = "ok", f"access token valid until {_at(row.expires_at)}"
        else:
            state = "refresh"
            detail = f"access token expired {_at(row.expires_at)}; refreshed on next call"
        found.append(TokenHealth(row.provider, state, f"{detail}; rotated {_at(row.updated_at)}"))
    if settings.shopify_admin_token is not None:
        found.append(TokenHealth("shopify", "ok", "static admin token (SHOPIFY_ADMIN_TOKEN)"))
    elif settings.shopify_client_id is not None:
        found.append(TokenHealth("shopify", "ok", "client credentials, fetched as needed"))
    else:
        found.append(TokenHealth("shopify", "missing", "no Shopify credentials configured"))
    return found


def _at(moment: datetime | None) -> str:
    return "never" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def overview(runtime: Any) -> Overview:
    settings = runtime.settings
    async with transaction(runtime.sessions) as session:
        cursors = {
            row.name: row.updated_at
            for row in (await session.execute(sql("SELECT name, updated_at FROM sync_cursors")))
        }
        states = dict(
            (
                await session.execute(
                    sql(
                        "SELECT state, count(*) FROM jobs "
                        "WHERE state IN ('queued', 'running', 'dead') GROUP BY state"
                    )
                )
            ).all()
        )
        findings = dict(
            (
                await session.execute(
                    sql(
                        "SELECT type, count(*) FROM findings WHERE resolved_at IS NULL "
                        "GROUP BY type ORDER BY type"
                    )
                )
            ).all()
        )
        reconcile = await lists.runs_page(session, kind="reconcile", limit=1)
        backfill = await lists.runs_page(session, kind="backfill", limit=1)
        tokens = (
            await session.execute(
                sql("SELECT provider, expires_at, updated_at FROM oauth_tokens ORDER BY provider")
            )
        ).all()
    shopify = runtime.clients.shopify if runtime.clients is not None else None
    pos_client = runtime.clients.pos if runtime.clients is not None else None
    return Overview(
        pos_kind=settings.pos_kind.value,
        directions=_directions(runtime, cursors),
        queued=int(states.get("queued", 0)),
        running=int(states.get("running", 0)),
        dead=int(states.get("dead", 0)),
        open_findings={str(k): int(v) for k, v in findings.items()},
        last_reconcile=reconcile[0] if reconcile else None,
        last_backfill=backfill[0] if backfill else None,
        api_version=settings.shopify_api_version,
        # What the last answer's X-Shopify-API-Version said (None before the first call).
        api_version_answered=shopify.answered_version if shopify is not None else None,
        tokens=_token_health(list(tokens), settings),
        ready=await readiness(runtime, extra=lambda: _upstream_checks(runtime, pos_client)),
    )


async def _upstream_checks(runtime: Any, pos_client: Any) -> dict[str, Any]:
    """The same read-backs as /readyz: the POS set-up and Shopify (each cached a minute)."""
    checks = dict(await pos_setup_checks(runtime.settings, pos_client))
    if runtime.shopify_health is not None:
        checks.update(await runtime.shopify_health.checks())
    return checks
