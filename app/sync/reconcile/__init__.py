"""Reconcile (issue 6, DESIGN 7): prove card by card that every system agrees, repair what is safe.

Events get lost, staff adjust balances by hand, upstreams fail for hours. A reconcile run reads
every system in bulk and compares it with what giftsync last agreed (`sync_base`):

- omni cards (Shopify + POS): the three-way merge of DESIGN 7 through omni's `sync_card`, so a
  repair is exactly what an event would have done: one idempotent move per side, queued in the
  same transaction as the base update (a crash never leaves half a repair);
- Vii shadow cards (Shopify + our hold state; Vii cannot list holds): an enabled Shopify card
  without an open hold is deactivated (`orphan_shadow_card`), an open hold whose Shopify card is
  disabled is handed to the shadow close job (`hold_without_card`);
- links: a card whose link row vanished is re-linked when giftsync's own marks (the note it
  wrote, the serial it derived) name exactly one twin, otherwise reported (`missing_link`).

How one run keeps memory flat and stays correct while the world moves on:

1. `T0`: one statement copies the base (balance, version) of every card, and which cards have
   moves still in flight, into a temporary table. Cards with moves in flight are skipped
   (`pending`): their upstream balances may or may not include those moves yet.
2. Shopify's bulk export and the POS card list are streamed into temporary tables (COPY in
   batches): nothing in this process grows with the card count.
3. The tables are joined in PostgreSQL and walked in card-id order in batches. A card whose
   balances equal its base on both sides is in sync and costs no write. Any other card goes to
   `sync_card` with the snapshot's states and the version read at `T0`; if the base moved
   since (an event merged meanwhile), `sync_card` drops the snapshot and reads live under the
   card's lock, so a snapshot older than the base can never be merged.
4. Findings are recorded with the run id; after a full run, open findings of the types the
   reconciler judges, on subjects it checked, that it did not see again are resolved.

A dry run does all of this up to the decision and writes nothing but its own run row (counts,
and the findings it would record under `progress.findings`).
A crash anywhere loses nothing: each card's repair is one transaction, the run checkpoints the
last card it finished, and the `reconcile.run` job (re-claimed when its lease runs out) takes a
fresh snapshot and continues after that card.

The phases, one module each:
- `snapshot.py`: steps 1 and 2; `omni_cards.py`: step 3; `shadow_cards.py`: Vii shadow cards;
  `unlinked.py`: upstream cards giftsync made that no card links any more (full runs only);
- `runner.py`: `Reconciler` (a run, its jobs, the schedule), the phases in order, step 4;
- `common.py`: one execution's state and its bookkeeping of counts and findings;
- `here.py`: a run executed by the CLI; `app/db/reconcile_snapshot.py`: the temporary tables.
"""

from app.sync.reconcile.common import DEACTIVATE_SHADOW_JOB, PERIODIC_NAME, Progress
from app.sync.reconcile.here import execute_here
from app.sync.reconcile.runner import Reconciler, schedule_run

__all__ = [
    "DEACTIVATE_SHADOW_JOB",
    "PERIODIC_NAME",
    "Progress",
    "Reconciler",
    "execute_here",
    "schedule_run",
]
