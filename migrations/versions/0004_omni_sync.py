"""omni sync: code hashes on links, customer email, OnSite balance projection

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 13:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A card's merge waits while any of its moves is unfinished; this finds them per card.
    op.create_index(
        "ix_jobs_unfinished_card_id",
        "jobs",
        [sa.text("(payload->>'card_id')")],
        postgresql_where=sa.text("state <> 'done'"),
    )
    op.add_column("gift_cards", sa.Column("customer_email", sa.String(320), nullable=True))
    op.create_index(op.f("ix_gift_cards_customer_email"), "gift_cards", ["customer_email"])
    op.add_column("card_links", sa.Column("code_hash", sa.String(64), nullable=True))
    op.create_index(op.f("ix_card_links_code_hash"), "card_links", ["code_hash"])
    op.create_table(
        "pos_card_balances",
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("serial_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("code_last4", sa.String(4), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("status", sa.String(16), server_default="enabled", nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("system", "code_hash", name=op.f("pk_pos_card_balances")),
    )
    op.create_table(
        "pos_seen_moves",
        sa.Column("system", sa.String(16), nullable=False),
        sa.Column("move_id", sa.String(255), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("system", "move_id", name=op.f("pk_pos_seen_moves")),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished_card_id", table_name="jobs")
    op.drop_table("pos_seen_moves")
    op.drop_table("pos_card_balances")
    op.drop_index(op.f("ix_card_links_code_hash"), table_name="card_links")
    op.drop_column("card_links", "code_hash")
    op.drop_index(op.f("ix_gift_cards_customer_email"), table_name="gift_cards")
    op.drop_column("gift_cards", "customer_email")
