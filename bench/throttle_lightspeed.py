"""How close the Lightspeed client's pacing gets to the leaky bucket's ceiling, with no 429.

N credit account reads from 20 concurrent tasks against the simulator (bucket 90, drip 1/s,
the drip scaled by --drip to keep the run short). The first 90 reads fit the empty bucket, the
rest can only go at the drip rate, so the ceiling is N / ((N - 90) / drip) reads/s.
Targets: ratio >= 0.9 and zero 429s.

    python bench/throttle_lightspeed.py [--reads 390] [--drip 20] [--tasks 20]
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

from app.clients.lightspeed import LightspeedClient
from app.sandbox.lightspeed import LightspeedSimulator
from app.sandbox.lightspeed_merchant import Readings
from tests.memory_tokens import MemoryTokenStore

BUCKET_SIZE = 90
BASE_DRIP = 1.0


async def run(reads: int, drip_scale: float, tasks: int) -> bool:
    drip = BASE_DRIP * drip_scale
    # The burst limiter (20 a second beside a 90 bucket) scaled like the drip.
    readings = Readings(burst_fraction=Readings().burst_fraction * drip_scale)
    sim = LightspeedSimulator(bucket_size=BUCKET_SIZE, drip_rate=drip, readings=readings)
    card_id = sim.add_gift_card("BENCH0000001", Decimal("10"))
    client = LightspeedClient(
        sim.account_id,
        sim.client_id,
        sim.client_secret,
        MemoryTokenStore(),
        initial_refresh_token=sim.issue_refresh_token(),
        base_url="http://ls.bench",
        token_url="http://ls.bench/auth/oauth/token",
        balance_sign=sim.balance_sign,
        transport=httpx.ASGITransport(app=sim.app),
    )
    # Refresh the token outside the measured window; it does not touch the bucket.
    await client._tokens.access_token()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(reads):
        queue.put_nowait(n)

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await client.get_gift_card(card_id)

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker() for _ in range(tasks)))
    finally:
        await client.aclose()
    elapsed = time.monotonic() - started
    achieved = reads / elapsed
    ceiling = reads / ((reads - BUCKET_SIZE) / drip)
    ratio = achieved / ceiling
    print(f"drip scale x{drip_scale:g}: bucket {BUCKET_SIZE}, drip {drip:g}/s, {tasks} tasks")
    print(f"reads {reads} in {elapsed:.2f} s: {achieved:.1f} reads/s, ceiling {ceiling:.1f}")
    print(f"ratio {ratio:.3f} (target >= 0.9), 429s {sim.rate_limited_count} (target 0)")
    return ratio >= 0.9 and sim.rate_limited_count == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=390)
    parser.add_argument("--drip", type=float, default=20.0, help="drip rate scale factor")
    parser.add_argument("--tasks", type=int, default=20)
    args = parser.parse_args()
    if args.reads <= BUCKET_SIZE:
        parser.error(f"--reads must exceed the bucket size {BUCKET_SIZE}")
    ok = asyncio.run(run(args.reads, args.drip, args.tasks))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
