"""shadow card moves: when a pending Shopify move was sent

A move is marked pending before it is sent (so a crash after Shopify applied it is found by its
key), and a move not found by its key is taken as never applied only once Shopify can no longer
be applying it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("shadow_cards", sa.Column("unconfirmed_move_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("shadow_cards", "unconfirmed_move_at")
