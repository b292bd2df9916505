"""shadow cards close by their final Shopify state; durable apply intents; PIN lockouts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_AFTER = "('pending', 'applied', 'captured', 'released', 'expired', 'abandoned')"
_STATES_BEFORE = "('applied', 'captured', 'released', 'expired')"


def upgrade() -> None:
    op.add_column(
        "shadow_cards",
        sa.Column("loaded_minor", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column("shadow_cards", sa.Column("unconfirmed_move_key", sa.String(255)))
    op.add_column("shadow_cards", sa.Column("unconfirmed_move_minor", sa.BigInteger()))
    op.add_column("shadow_cards", sa.Column("hold_tran_id", sa.String(64)))
    op.add_column("shadow_cards", sa.Column("apply_token_hash", sa.String(64)))
    op.add_column("shadow_cards", sa.Column("settled_at", sa.DateTime(timezone=True)))
    op.add_column("shadow_cards", sa.Column("final_balance_minor", sa.BigInteger()))
    op.add_column(
        "shadow_cards",
        sa.Column("refunds_on_card_minor", sa.BigInteger(), server_default="0", nullable=False),
    )
    # Existing cards were never re-sized after a spend: what was put on them is what is applied.
    op.execute("UPDATE shadow_cards SET loaded_minor = applied_amount_minor")
    op.execute(
        "UPDATE shadow_cards SET settled_at = updated_at "
        "WHERE state <> 'applied' AND pin_ciphertext IS NULL AND card_number_ciphertext IS NULL"
    )
    op.drop_constraint(op.f("ck_shadow_cards_state"), "shadow_cards", type_="check")
    op.create_check_constraint(
        op.f("ck_shadow_cards_state"), "shadow_cards", f"state IN {_STATES_AFTER}"
    )
    op.drop_constraint(op.f("ck_shadow_cards_pin_only_while_open"), "shadow_cards", type_="check")
    op.create_check_constraint(
        op.f("ck_shadow_cards_pin_only_until_settled"),
        "shadow_cards",
        "settled_at IS NULL OR pin_ciphertext IS NULL",
    )
    op.create_index(
        "ix_shadow_cards_unsettled",
        "shadow_cards",
        ["state"],
        postgresql_where=sa.text("settled_at IS NULL"),
    )
    op.create_table(
        "card_lockouts",
        sa.Column("vii_card_hash", sa.String(64), primary_key=True),
        sa.Column("vii_last4", sa.String(4), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("cleared_at", sa.DateTime(timezone=True)),
        sa.Column("cleared_by", sa.String(128)),
    )


def downgrade() -> None:
    op.drop_table("card_lockouts")
    op.drop_index("ix_shadow_cards_unsettled", table_name="shadow_cards")
    op.drop_constraint(
        op.f("ck_shadow_cards_pin_only_until_settled"), "shadow_cards", type_="check"
    )
    op.execute("UPDATE shadow_cards SET pin_ciphertext = NULL WHERE state <> 'applied'")
    op.create_check_constraint(
        op.f("ck_shadow_cards_pin_only_while_open"),
        "shadow_cards",
        "state = 'applied' OR pin_ciphertext IS NULL",
    )
    op.execute("UPDATE shadow_cards SET state = 'released' WHERE state IN ('pending', 'abandoned')")
    op.drop_constraint(op.f("ck_shadow_cards_state"), "shadow_cards", type_="check")
    op.create_check_constraint(
        op.f("ck_shadow_cards_state"), "shadow_cards", f"state IN {_STATES_BEFORE}"
    )
    for column in (
        "refunds_on_card_minor",
        "final_balance_minor",
        "settled_at",
        "apply_token_hash",
        "hold_tran_id",
        "unconfirmed_move_minor",
        "unconfirmed_move_key",
        "loaded_minor",
    ):
        op.drop_column("shadow_cards", column)
