"""Alert digests: new findings and dead jobs posted to a local receiver, once per interval at most,
nothing when nothing is new, once across workers (issue 17)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.alerts import Alerts
from app.db.engine import SessionFactory, transaction
from app.db.jobs import enqueue
from tests.conftest import make_settings


@dataclass
class Receiver:
    """A Slack-compatible incoming webhook on a real local port."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    found = Receiver(f"http://127.0.0.1:{listener.getsockname()[1]}/hooks/giftsync")

    async def hook(request: Request) -> Response:
        assert request.headers["content-type"] == "application/json"
        found.posts.append(json.loads(await request.body()))
        return Response("ok", status_code=found.status)

    app = Starlette(routes=[Route("/hooks/giftsync", hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.02)
    try:
        yield found
    finally:
        server.should_exit = True
        await serving
        listener.close()


def _alerts(sessions: SessionFactory, receiver: Receiver, **settings: Any) -> Alerts:
    return Alerts(
        sessions,
        make_settings(alert_webhook_url=receiver.url, alert_interval="PT1H", **settings),
    )


async def _finding(engine: AsyncEngine, finding_type: str, subject: str) -> int:
    async with engine.begin() as connection:
        return int(
            await connection.scalar(
                text("INSERT INTO findings (type, subject) VALUES (:t, :s) RETURNING id"),
                {"t": finding_type, "s": subject},
            )
        )


async def _dead_job(sessions: SessionFactory, key: str, error: str) -> int:
    async with transaction(sessions) as session:
        job_id = await enqueue(session, "omni.move", {"sealed": "c2VjcmV0"}, key)
        await session.execute(
            text(
                "UPDATE jobs SET state = 'dead', attempts = 8, last_error = :e, "
                "updated_at = now() WHERE id = :id"
            ),
            {"e": error, "id": job_id},
        )
    assert job_id is not None
    return job_id


async def _interval_passes(engine: AsyncEngine) -> None:
    """An injected clock: the last digest left a little over ALERT_INTERVAL ago."""
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE alert_state SET last_sent_at = last_sent_at - interval '61 minutes'")
        )


async def test_one_digest_per_interval_and_nothing_when_nothing_is_new(
    sessions: SessionFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    alerts = _alerts(sessions, receiver, public_url="https://giftsync.example.com")
    assert await alerts.send_due() is False  # nothing at all yet
    first = await _finding(engine, "status_conflict", "card:1")
    job = await _dead_job(sessions, "k-1", "ShopifyRejected: gift card disabled")

    assert await alerts.send_due() is True
    assert receiver.posts == [
        {
            "text": "giftsync: 1 new finding and 1 dead job\n"
            f"Findings:\n• #{first} status_conflict: card:1\n"
            f"Dead jobs:\n• #{job} omni.move after 8 attempts: ShopifyRejected: gift card disabled\n"
            "Console: https://giftsync.example.com/console"
        }
    ]

    # New, but the interval is not over: held back, never a second digest.
    second = await _finding(engine, "missing_link", "shopify:2")
    assert await alerts.send_due() is False
    assert len(receiver.posts) == 1

    await _interval_passes(engine)
    assert await alerts.send_due() is True
    assert receiver.posts[1] == {
        "text": f"giftsync: 1 new finding\nFindings:\n• #{second} missing_link: shopify:2\n"
        "Console: https://giftsync.example.com/console"
    }

    # The interval is over again but nothing is new: nothing is sent.
    await _interval_passes(engine)
    assert await alerts.send_due() is False
    assert len(receiver.posts) == 2
    assert "c2VjcmV0" not in json.dumps(receiver.posts)


async def test_a_job_that_dies_again_after_a_retry_is_news_again(
    sessions: SessionFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    alerts = _alerts(sessions, receiver)
    job = await _dead_job(sessions, "k-1", "first death")
    assert await alerts.send_due() is True
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE jobs SET state = 'dead', last_error = 'second death', "
                "updated_at = now() + interval '1 second' WHERE id = :id"
            ),
            {"id": job},
        )
    await _interval_passes(engine)
    assert await alerts.send_due() is True
    assert receiver.posts[1]["text"].startswith("giftsync: 1 dead job\nDead jobs:\n• #")
    assert "second death" in receiver.posts[1]["text"]


async def test_several_workers_send_one_digest(
    sessions: SessionFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    await _finding(engine, "overdraft", "card:1")
    workers = [_alerts(sessions, receiver) for _ in range(4)]
    sent = await asyncio.gather(*(worker.send_due() for worker in workers))
    assert sorted(sent) == [False, False, False, True]
    assert len(receiver.posts) == 1


async def test_a_refused_post_is_tried_again_with_the_same_items(
    sessions: SessionFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    alerts = _alerts(sessions, receiver)
    await _finding(engine, "overdraft", "card:1")
    receiver.status = 500
    with pytest.raises(Exception, match="answered 500"):
        await alerts.send_due()
    receiver.status = 200
    assert await alerts.send_due() is True
    assert [post["text"].splitlines()[0] for post in receiver.posts] == [
        "giftsync: 1 new finding",
        "giftsync: 1 new finding",
    ]


async def test_long_digests_name_twenty_and_count_the_rest(
    sessions: SessionFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    for index in range(23):
        await _finding(engine, "missing_link", f"shopify:{index}")
    assert await _alerts(sessions, receiver).send_due() is True
    lines = receiver.posts[0]["text"].splitlines()
    assert lines[0] == "giftsync: 23 new findings"
    assert sum(line.startswith("• #") for line in lines) == 20
    assert lines[-1] == "… and 3 more"


async def test_resolved_findings_and_no_webhook_send_nothing(
    sessions: SessionFactory, engine: AsyncEngine, receiver: Receiver
) -> None:
    found = await _finding(engine, "overdraft", "card:1")
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE findings SET resolved_at = now() WHERE id = :id"), {"id": found}
        )
    assert await _alerts(sessions, receiver).send_due() is False
    await _finding(engine, "overdraft", "card:2")
    assert await Alerts(sessions, make_settings()).send_due() is False
    assert receiver.posts == []
    assert make_settings().alert_interval == timedelta(hours=1)
