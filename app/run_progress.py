"""How far a reconcile or backfill run has got: cards done of the total, rate, time left.

Read from what the run checkpoints (`runs.progress`): a reconcile writes `cards_done` and
`cards_total`; a backfill writes one pass per direction with `processed` and, when the listing
was known first, `total`. The rate is cards per second since the run started; the time left is
what is left at that rate. Display figures only: no money here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.db.lists import RunRow

_PASSES = ("to_pos", "to_shopify")


@dataclass(frozen=True)
class RunProgress:
    done: int
    total: int | None
    percent: int | None
    rate_per_second: float | None
    seconds_left: int | None
    finished: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "percent": self.percent,
            "ratePerSecond": self.rate_per_second,
            "secondsLeft": self.seconds_left,
            "finished": self.finished,
        }


def _done_and_total(run: RunRow) -> tuple[int, int | None]:
    progress = run.progress or {}
    if run.kind == "reconcile":
        total = progress.get("cards_total")
        return int(progress.get("cards_done", 0)), None if total is None else int(total)
    passes = [progress[name] for name in _PASSES if isinstance(progress.get(name), dict)]
    done = sum(int(p.get("processed", 0)) for p in passes)
    totals = [p.get("total") for p in passes]
    total = sum(int(t) for t in totals if t is not None) if passes and None not in totals else None
    return done, total


def run_progress(run: RunRow, now: datetime | None = None) -> RunProgress:
    done, total = _done_and_total(run)
    finished = run.status in ("succeeded", "failed")
    percent = None
    if total:
        percent = min(100, done * 100 // total)
    elif finished and total == 0:
        percent = 100
    rate = None
    if run.started_at is not None and done > 0:
        until = run.finished_at or now or datetime.now(UTC)
        elapsed = (until - run.started_at).total_seconds()
        if elapsed > 0:
            rate = round(done / elapsed, 1)
    seconds_left = None
    if not finished and rate and total is not None:
        seconds_left = int(max(total - done, 0) / rate)
    return RunProgress(done, total, percent, rate, seconds_left, finished)
