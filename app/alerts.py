"""Alert digests (issue 17): new findings and dead jobs, posted to `ALERT_WEBHOOK_URL`.

One digest per `ALERT_INTERVAL` at most, and none when nothing is new. What was told lives in
the database (`alerts_sent`: a finding once, a dead job once per time it died; `alert_state`:
when the last digest left), and the decision is taken under a row lock, so any number of
workers send each item once. A failed post changes nothing: the next look tries again.

The body is Slack-compatible (`{"text": ...}`), which Slack, Mattermost, Rocket.Chat and
Microsoft Teams' incoming webhooks all take. It names finding types and subjects and job kinds
with their (already masked) last error, never a code, PIN or card number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.engine import SessionFactory, transaction
from app.db.sql import sql
from app.logging import get_logger
from app.settings import Settings

log = get_logger(__name__)

DIGEST = "digest"
SHOWN = 20
"""Items named in one digest; the rest are counted."""
BATCH = 5000
"""Items one digest covers at most; any beyond wait for the next one."""
ERROR_SHOWN = 160


@dataclass(frozen=True)
class FindingItem:
    id: int
    type: str
    subject: str


@dataclass(frozen=True)
class DeadJobItem:
    id: int
    kind: str
    attempts: int
    last_error: str | None
    marker: str


@dataclass
class Digest:
    findings: list[FindingItem] = field(default_factory=list)
    dead_jobs: list[DeadJobItem] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.findings and not self.dead_jobs

    def text(self, console_url: str | None) -> str:
        head = []
        if self.findings:
            head.append(_plural(len(self.findings), "new finding"))
        if self.dead_jobs:
            head.append(_plural(len(self.dead_jobs), "dead job"))
        lines = [f"giftsync: {' and '.join(head)}"]
        if self.findings:
            lines.append("Findings:")
            lines += [f"• #{f.id} {f.type}: {f.subject}" for f in self.findings[:SHOWN]]
            lines += _more(len(self.findings))
        if self.dead_jobs:
            lines.append("Dead jobs:")
            for job in self.dead_jobs[:SHOWN]:
                error = (job.last_error or "no error recorded")[:ERROR_SHOWN]
                lines.append(f"• #{job.id} {job.kind} after {job.attempts} attempts: {error}")
            lines += _more(len(self.dead_jobs))
        if console_url:
            lines.append(f"Console: {console_url}/console")
        return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _more(count: int) -> list[str]:
    return [f"… and {count - SHOWN} more"] if count > SHOWN else []


class Alerts:
    """The `alert-digest` schedule's flow: built only when ALERT_WEBHOOK_URL is set."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.transport = transport
        self.timeout = timeout

    async def run(self) -> None:
        """The schedule entry: send a digest when one is due and something is new."""
        await self.send_due()

    async def send_due(self) -> bool:
        """True when a digest was posted."""
        url = self.settings.alert_webhook_url
        if url is None:
            return False
        async with transaction(self.sessions) as session:
            if not await _due(session, self.settings):
                return False
            digest = await _new_items(session)
            if digest.empty:
                return False
            # Posted while the row is locked: another worker waits rather than sending twice;
            # a failed post rolls back, so the same items go next time.
            await self._post(url, digest.text(self.settings.public_url))
            await _mark(session, digest)
        log.info(
            "alert_digest_sent", findings=len(digest.findings), dead_jobs=len(digest.dead_jobs)
        )
        return True

    async def _post(self, url: str, text: str) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
            response = await client.post(url, json={"text": text})
        if response.status_code >= 300:
            log.warning("alert_digest_refused", status=response.status_code)
            raise AlertNotDelivered(f"the alert webhook answered {response.status_code}")


class AlertNotDelivered(Exception):
    """The webhook did not take the digest; nothing is marked as sent."""


async def _due(session: AsyncSession, settings: Settings) -> bool:
    """Lock the digest's row; False when another worker holds it or the interval is not over."""
    await session.execute(
        sql("INSERT INTO alert_state (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"),
        {"n": DIGEST},
    )
    due = await session.scalar(
        sql(
            """
            SELECT last_sent_at IS NULL OR last_sent_at <= now() - CAST(:interval AS interval)
            FROM alert_state WHERE name = :n
            FOR UPDATE SKIP LOCKED
            """
        ),
        {"n": DIGEST, "interval": settings.alert_interval},
    )
    return bool(due)


async def _new_items(session: AsyncSession) -> Digest:
    findings = await session.execute(
        sql(
            """
            SELECT f.id, f.type, f.subject FROM findings f
            WHERE f.resolved_at IS NULL AND NOT EXISTS (
                SELECT 1 FROM alerts_sent a WHERE a.kind = 'finding' AND a.item_id = f.id)
            ORDER BY f.id LIMIT :limit
            """
        ),
        {"limit": BATCH},
    )
    # A job retried by an operator that dies again is news again: its death is keyed by when.
    dead = await session.execute(
        sql(
            """
            SELECT j.id, j.kind, j.attempts, j.last_error,
                   to_char(j.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS marker
            FROM jobs j
            WHERE j.state = 'dead' AND NOT EXISTS (
                SELECT 1 FROM alerts_sent a
                WHERE a.kind = 'job' AND a.item_id = j.id
                  AND a.marker = to_char(j.updated_at AT TIME ZONE 'UTC',
                                         'YYYY-MM-DD"T"HH24:MI:SS.US'))
            ORDER BY j.id LIMIT :limit
            """
        ),
        {"limit": BATCH},
    )
    return Digest(
        findings=[FindingItem(*row) for row in findings.all()],
        dead_jobs=[DeadJobItem(*row) for row in dead.all()],
    )


async def _mark(session: AsyncSession, digest: Digest) -> None:
    rows = [{"k": "finding", "i": f.id, "m": "open"} for f in digest.findings]
    rows += [{"k": "job", "i": j.id, "m": j.marker} for j in digest.dead_jobs]
    await session.execute(
        sql(
            "INSERT INTO alerts_sent (kind, item_id, marker) VALUES (:k, :i, :m) "
            "ON CONFLICT DO NOTHING"
        ),
        rows,
    )
    await session.execute(
        sql("UPDATE alert_state SET last_sent_at = now() WHERE name = :n"), {"n": DIGEST}
    )
