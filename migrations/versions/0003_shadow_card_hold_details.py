"""shadow card hold details

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 10:58:57.359993
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "shadow_cards",
        sa.Column("vii_balance_minor", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "shadow_cards", sa.Column("card_number_ciphertext", sa.LargeBinary(), nullable=True)
    )
    op.add_column(
        "shadow_cards", sa.Column("version", sa.Integer(), server_default="0", nullable=False)
    )


def downgrade() -> None:
    op.drop_column("shadow_cards", "version")
    op.drop_column("shadow_cards", "card_number_ciphertext")
    op.drop_column("shadow_cards", "vii_balance_minor")
