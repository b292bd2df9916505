"""What an operator does about a finding: resolve it with a note, or reconcile its card again.

Shared by `/internal/findings/*` and the console, so both answer the same way.
"""

from __future__ import annotations

import uuid

from app.db import lists
from app.db.engine import SessionFactory, transaction
from app.sync import runs

NOTE_LIMIT = 2000


class FindingNotFound(Exception):
    """No finding has this id."""


class FindingAlreadyResolved(Exception):
    """Resolved before (by a run or by staff); nothing changes."""


class FindingWithoutCard(Exception):
    """The finding names no giftsync card, so there is no card to reconcile."""


async def resolve(
    sessions: SessionFactory, finding_id: int, *, operator: str, note: str
) -> lists.FindingRow:
    async with transaction(sessions) as session:
        resolved = await lists.resolve_finding(
            session, finding_id, operator=operator, note=note[:NOTE_LIMIT]
        )
        if resolved is not None:
            return resolved
        if await lists.finding(session, finding_id) is None:
            raise FindingNotFound(str(finding_id))
    raise FindingAlreadyResolved(str(finding_id))


async def reconcile_card(sessions: SessionFactory, finding_id: int, *, dry_run: bool) -> uuid.UUID:
    """Start a reconcile of the finding's card; a later run that sees it fixed resolves it."""
    async with transaction(sessions) as session:
        found = await lists.finding(session, finding_id)
    if found is None:
        raise FindingNotFound(str(finding_id))
    if found.card_id is None:
        raise FindingWithoutCard(str(finding_id))
    return await runs.start_reconcile(sessions, dry_run=dry_run, card_ids=[found.card_id])
