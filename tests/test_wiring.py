"""The README's map of topics, jobs and schedules is the wiring table itself."""

from __future__ import annotations

from app import wiring
from app.sync import inbox
from tests.conftest import ROOT
from tests.pure import clean_database  # noqa: F401

START, END = "<!-- wiring:start -->", "<!-- wiring:end -->"


def test_the_readme_map_is_generated_from_the_wiring_tables() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == wiring.describe(), (
        "regenerate: python -c 'from app import wiring; print(wiring.describe())'"
    )


def test_every_order_topic_giftsync_needs_has_a_handler_and_every_entry_a_doc() -> None:
    for topic in (
        inbox.TOPIC_PAID,
        inbox.TOPIC_TRANSACTION,
        inbox.TOPIC_REFUND,
        inbox.TOPIC_CANCELLED,
    ):
        assert wiring.TOPICS[topic]
    for on in [*wiring.JOBS.values(), *(o for t in wiring.TOPICS.values() for o in t)]:
        assert on.doc and on.flow in {
            "shadow",
            "pollers",
            "omni",
            "reconciler",
            "backfill",
            "inbox",
        }
