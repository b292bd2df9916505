"""oauth_tokens.refresh_token may be empty: Shopify's client credentials tokens have none

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("oauth_tokens", "refresh_token", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # Rows without a refresh token (client credentials) cannot be kept by the older schema.
    op.execute("DELETE FROM oauth_tokens WHERE refresh_token IS NULL")
    op.alter_column("oauth_tokens", "refresh_token", existing_type=sa.Text(), nullable=False)
