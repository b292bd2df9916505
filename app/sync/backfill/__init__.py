"""Historical backfill (DESIGN 1.A): every card that exists before omni sync starts crosses once."""

from app.sync.backfill.runner import (
    Backfill,
    BackfillBusy,
    BackfillFailed,
    BackfillProgress,
    BackfillReport,
    run_or_follow,
    sort_key,
)

__all__ = [
    "Backfill",
    "BackfillBusy",
    "BackfillFailed",
    "BackfillProgress",
    "BackfillReport",
    "run_or_follow",
    "sort_key",
]
