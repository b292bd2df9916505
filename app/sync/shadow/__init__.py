"""Vii shadow cards at checkout (DESIGN 1.B): one Shopify card per checkout and Vii card,
backed by a Vii hold, closed by the same steps whatever closes it.

- `checkout.py` / `resize.py`: `POST /check-balance` (new card, or the same one re-sized);
- `close.py`: release, expiry and the close and recovery jobs that settle a card with Vii;
- `orders.py`: what order webhooks mean for a shadow card (close it, note a refund);
- `attempts.py`: PIN limits and lockouts; `gate.py`: one request per card at a time;
- `card_moves.py` / `vii_hold.py`: the Shopify and Vii sides of a card's money.

The money rule (captured - undone == spent through Shopify - refunds given back) holds by
construction: only the close captures, and it captures what the deactivated card spent.
"""

from app.sync.shadow.attempts import clear_lockout
from app.sync.shadow.checkout import apply
from app.sync.shadow.close import close_job, expire_due, recover_job, release
from app.sync.shadow.deps import ApplyRequest, ShadowDeps
from app.sync.shadow.errors import ShadowCardError
from app.sync.shadow.lifecycle import CLOSE_JOB, RECOVER_JOB
from app.sync.shadow.result import ApplyResult
from app.sync.shadow.vii_hold import UNDO_JOB, undo_job

__all__ = [
    "CLOSE_JOB",
    "RECOVER_JOB",
    "UNDO_JOB",
    "ApplyRequest",
    "ApplyResult",
    "ShadowCardError",
    "ShadowDeps",
    "apply",
    "clear_lockout",
    "close_job",
    "expire_due",
    "recover_job",
    "release",
    "undo_job",
]
