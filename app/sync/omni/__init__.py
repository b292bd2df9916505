"""Omni gift cards (DESIGN 1.A): one card in Shopify and on the POS, every move mirrored.

Every change, whichever way it is noticed (POS poll, Shopify poll, order webhook, reconcile),
ends in `sync.sync_card`: read what each system holds, run the three-way merge of DESIGN 7
against the last agreed balance, and in one transaction move the base forward and enqueue one
move job per system that must change. Mirroring is therefore never "copy this event across": a
missed or repeated event cannot double a move, and both sides spending between two polls add up.

- `merge.py`: the merge rule, a pure function;
- `flow.py`: `OmniSync`, the upstreams and settings every step works with;
- `links.py`: a card new to giftsync crosses to the other side once, and both are linked;
- `sync.py`: merging one linked card; `moves.py`: the jobs that carry the merge out;
- `triggers.py`: the pollers and order webhooks that notice changes;
- `common.py`: job kinds, outcomes and card states the others share.

Invariants that keep money right:
- A card's merge runs under an advisory lock per card and never while an earlier move of the
  card is unfinished (queued, running or dead): the plan of base version v assumes every move
  planned from v-1 has landed.
- A move the upstream refuses for good (insufficient funds after a concurrent spend, card gone)
  rolls the base back by that move, so the next merge counts the spend it missed, and ends in
  an overdraft finding if the money is not there.
- Cards are created with deterministic identities (the POS serial as the Shopify code; a POS
  serial derived from the Shopify card id), so a create retried after a crash finds its card.
"""

from app.sync.omni.common import (
    CURSOR_OVERLAP,
    DEACTIVATE_JOB,
    MOVE_JOB,
    NOTE_MARKER,
    NOTIFY_JOB,
    SHOPIFY,
    SYNC_JOB,
    LinkOutcome,
    SyncOutcome,
    pos_state,
    serial_for_shopify_card,
    shopify_state,
)
from app.sync.omni.flow import OmniSync
from app.sync.omni.links import export_shopify_card, import_pos_card
from app.sync.omni.sync import sync_card
from app.sync.omni.triggers import POS_POLLER, SHOPIFY_POLLER, OmniPollers

__all__ = [
    "CURSOR_OVERLAP",
    "DEACTIVATE_JOB",
    "MOVE_JOB",
    "NOTE_MARKER",
    "NOTIFY_JOB",
    "POS_POLLER",
    "SHOPIFY",
    "SHOPIFY_POLLER",
    "SYNC_JOB",
    "LinkOutcome",
    "OmniPollers",
    "OmniSync",
    "SyncOutcome",
    "export_shopify_card",
    "import_pos_card",
    "pos_state",
    "serial_for_shopify_card",
    "shopify_state",
    "sync_card",
]
