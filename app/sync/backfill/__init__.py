"""Historical backfill (DESIGN 1.A): every card that exists before omni sync starts crosses once.

Two passes, each offering every card of one system to omni sync, which links it or says why not:
- `to_pos` (DOWNLOAD_SHOPIFY_GIFT_CARDS): every Shopify card, read with one bulk export, goes to
  omni's `export_shopify_card`;
- `to_shopify` (CREATE_UPDATE_SHOPIFY_GIFT_CARDS): every POS card, read page by page, goes to
  omni's `import_pos_card`.

The writes are what takes time (Lightspeed allows about one unit a second, and a card costs ten),
so a bounded number of workers pull cards from a bounded queue: the clients pace themselves to
the upstream limits, the workers keep their buckets busy, and memory stays flat however many
cards there are.

Resuming: a run is a `runs` row and a `backfill.run` job. A pass checkpoints into the row every
`checkpoint_every` cards or `checkpoint_seconds`: its counts, the reasons cards were skipped, and
a watermark, the listing position (card id) up to which every card has been handled. The
listings come sorted by id (Shopify's export by id, Lightspeed by creditAccountID, the OnSite
projection by code hash), so a run that crashed, was killed or lost its worker starts again at
the watermark; the few cards between the watermark and the crash are offered again, which is
safe because links are unique and card identities deterministic (the POS serial is the Shopify
code; the POS serial of a Shopify card is derived from its id), so a retried create finds the
card it made. Such a card may be counted as `already_linked` although this run moved it. If a
listing turns out not to be sorted, the watermark cannot be trusted and the pass counts again
from the start (offering a linked card again costs one database read).

One backfill runs at a time (advisory lock): Shopify allows one bulk export per shop, and two
runs would offer the same cards twice over.

- `runner.py`: `Backfill`, a run's passes in order and its checkpoints;
- `listing.py`: what a pass walks (the spooled Shopify export, the POS pages) and sort keys;
- `streaming.py`: the engine of a pass (bounded queue, workers, counting in listing order);
- `cards.py`: one card offered to omni sync, and what an upstream's refusal of it means;
- `progress.py`: what a pass checkpoints and how a run reports where it stands.
"""

from app.sync.backfill.listing import sort_key
from app.sync.backfill.progress import BackfillProgress, BackfillReport
from app.sync.backfill.runner import Backfill, BackfillBusy, BackfillFailed, run_or_follow

__all__ = [
    "Backfill",
    "BackfillBusy",
    "BackfillFailed",
    "BackfillProgress",
    "BackfillReport",
    "run_or_follow",
    "sort_key",
]
