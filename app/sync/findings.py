"""What a run finds: recorded with the run's id, and resolved when a later run no longer sees it.

Evidence is shown as-is by `GET /internal/runs/{id}`: never put a serial, code or PIN in it
(last 4 only).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import findings


async def record_finding(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    *,
    finding_type: str,
    subject: str,
    card_id: uuid.UUID | str | None,
    evidence: dict[str, Any],
) -> bool:
    """Open a finding seen by this run, or mark an open one as still seen; True when new."""
    return await findings.open_finding(
        session,
        finding_type=finding_type,
        subject=subject,
        card_id=card_id,
        evidence=evidence,
        run_id=run_id,
    )


async def resolve_findings_not_seen(
    session: AsyncSession,
    run_id: uuid.UUID | str,
    *,
    finding_types: Collection[str],
    card_ids: Collection[uuid.UUID] | None = None,
    subject_prefix: str | None = None,
) -> int:
    """Resolve the open findings in this run's scope that this run did not see again.

    The scope is what the run checked: the finding types it is the judge of, and optionally
    the cards (a reconcile of some cards) or a subject prefix. A finding last seen by a run
    that started after this one, or opened by another flow after this run started, is left
    open: this run's look at it may predate it. Returns how many were resolved.
    """
    if not finding_types:
        raise ValueError("name the finding types this run is the judge of")
    prefix_like = None
    if subject_prefix is not None:
        escaped = subject_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        prefix_like = escaped + "%"
    return await findings.resolve_not_seen(
        session, run_id, finding_types=finding_types, card_ids=card_ids, subject_like=prefix_like
    )
