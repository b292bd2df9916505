"""How close the upstream clients' pacing gets to each rate limit's ceiling, with no refusals.

Shopify: 600 gift card creates from 20 concurrent tasks against the Shopify simulator at
Standard limits (bucket 1000, restore 100/s, mutation cost 10). The first 100 creates fit the
full bucket; the rest go at restore / cost = 10/s, so the ceiling is
creates / ((creates * 10 - 1000) / restore) creates/s. `--restore-scale` speeds the refill
(same bucket shape) to shorten the run; the factor is printed. Then the Lightspeed half
(bench/throttle_lightspeed.py: credit account reads, bucket 90, drip 1/s).
Targets: ratio >= 0.9 and zero THROTTLED / 429 answers.

    python bench/throttle.py [--creates 600] [--tasks 20] [--restore-scale 1] [--skip-lightspeed]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from app.clients.shopify import ShopifyClient
from app.sandbox.shopify import ShopifySimulator

BUCKET = 1000
RESTORE = 100.0
MUTATION_COST = 10


async def shopify(creates: int, tasks: int, restore_scale: float) -> bool:
    restore = RESTORE * restore_scale
    sim = ShopifySimulator(bucket_size=BUCKET, restore_rate=restore)
    client = ShopifyClient(
        "http://shopify.bench",
        "shpat_sandbox_token",
        "2025-01",
        transport=httpx.ASGITransport(app=sim.app),
    )
    # One cheap call first so the client learns the bucket's real size from the answer.
    await client.find_gift_cards_by_last_characters("0000")
    await asyncio.sleep(1.0 / restore * 10)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(creates):
        queue.put_nowait(n)

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await client.create_gift_card(Decimal("10.00"), note="bench")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    ceiling_seconds = max(creates * MUTATION_COST - BUCKET, 0) / restore
    ceiling = creates / ceiling_seconds if ceiling_seconds else float("inf")
    achieved = creates / elapsed
    ratio = achieved / ceiling
    print("Shopify gift card creates (simulator, Standard bucket shape)")
    print(f"  restore scale factor : x{restore_scale:g} (restore {restore:g} points/s)")
    print(f"  creates / tasks      : {creates} / {tasks}")
    print(f"  elapsed              : {elapsed:.2f} s")
    print(f"  achieved             : {achieved:.2f} creates/s")
    print(f"  ceiling              : {ceiling:.2f} creates/s (initial bucket counted)")
    print(f"  ratio                : {ratio:.3f}  (target >= 0.9)")
    print(f"  THROTTLED answers    : {sim.throttled_count}  (target 0)")
    return ratio >= 0.9 and sim.throttled_count == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=600)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--restore-scale", type=float, default=1.0)
    parser.add_argument("--skip-lightspeed", action="store_true")
    args = parser.parse_args()
    ok = asyncio.run(shopify(args.creates, args.tasks, args.restore_scale))
    if not args.skip_lightspeed:
        print()
        from bench import throttle_lightspeed

        ok = asyncio.run(throttle_lightspeed.run(390, 20.0, 20)) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
