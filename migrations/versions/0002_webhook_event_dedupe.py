"""webhook event dedupe

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:55:52.956023
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_webhook_inbox_event_id"), table_name="webhook_inbox")
    op.create_index(
        "uq_webhook_inbox_topic_event_id",
        "webhook_inbox",
        ["topic", "event_id"],
        unique=True,
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "uq_webhook_inbox_topic_event_id",
        table_name="webhook_inbox",
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )
    op.create_index(op.f("ix_webhook_inbox_event_id"), "webhook_inbox", ["event_id"], unique=False)
