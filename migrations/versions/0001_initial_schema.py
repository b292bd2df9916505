"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 09:44:13.587374
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gift_cards",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('omni', 'vii_shadow')", name=op.f("ck_gift_cards_kind")),
        sa.CheckConstraint("state IN ('active', 'deactivated')", name=op.f("ck_gift_cards_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gift_cards")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="8", nullable=False),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("locked_by", sa.String(length=128), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'done', 'dead')", name=op.f("ck_jobs_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    op.create_index(
        "ix_jobs_claimable",
        "jobs",
        ["run_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'running')"),
    )
    op.create_table(
        "oauth_tokens",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("provider", name=op.f("pk_oauth_tokens")),
    )
    op.create_table(
        "pin_failures",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("vii_card_hash", sa.String(length=64), nullable=False),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column(
            "failed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pin_failures")),
    )
    op.create_index(
        "ix_pin_failures_card_hash_failed_at",
        "pin_failures",
        ["vii_card_hash", "failed_at"],
        unique=False,
    )
    op.create_index(
        "ix_pin_failures_client_address_failed_at",
        "pin_failures",
        ["client_address", "failed_at"],
        unique=False,
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column(
            "params",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "counts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "progress",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('reconcile', 'backfill')", name=op.f("ck_runs_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "sync_cursors",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_cursors")),
    )
    op.create_table(
        "webhook_inbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("shop_domain", sa.String(length=255), nullable=True),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_inbox")),
        sa.UniqueConstraint("webhook_id", name=op.f("uq_webhook_inbox_webhook_id")),
    )
    op.create_index(op.f("ix_webhook_inbox_event_id"), "webhook_inbox", ["event_id"], unique=False)
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.String(length=128), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "beat_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_heartbeats")),
    )
    op.create_table(
        "card_links",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("card_id", sa.UUID(), nullable=False),
        sa.Column("system", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=False),
        sa.Column("code_last4", sa.String(length=4), nullable=True),
        sa.Column("last_seen_balance_minor", sa.BigInteger(), nullable=True),
        sa.Column("last_seen_status", sa.String(length=16), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "system IN ('shopify', 'lightspeed', 'onsite', 'vii')",
            name=op.f("ck_card_links_system"),
        ),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["gift_cards.id"],
            name=op.f("fk_card_links_card_id_gift_cards"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_links")),
        sa.UniqueConstraint("card_id", "system", name="uq_card_links_card_id_system"),
        sa.UniqueConstraint("system", "external_id", name="uq_card_links_system_external_id"),
    )
    op.create_table(
        "findings",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("card_id", sa.UUID(), nullable=True),
        sa.Column("first_run_id", sa.UUID(), nullable=True),
        sa.Column("last_run_id", sa.UUID(), nullable=True),
        sa.Column(
            "evidence",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["gift_cards.id"],
            name=op.f("fk_findings_card_id_gift_cards"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["first_run_id"], ["runs.id"], name=op.f("fk_findings_first_run_id_runs")
        ),
        sa.ForeignKeyConstraint(
            ["last_run_id"], ["runs.id"], name=op.f("fk_findings_last_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_findings")),
    )
    op.create_index(
        "uq_findings_open_subject",
        "findings",
        ["type", "subject"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("card_id", sa.UUID(), nullable=False),
        sa.Column("system", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("cause", sa.String(length=64), nullable=False),
        sa.Column(
            "detail",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["gift_cards.id"],
            name=op.f("fk_ledger_card_id_gift_cards"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_ledger_idempotency_key")),
    )
    op.create_index(
        "ix_ledger_card_id_created_at", "ledger", ["card_id", "created_at"], unique=False
    )
    op.create_table(
        "shadow_cards",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("card_id", sa.UUID(), nullable=False),
        sa.Column("checkout_token", sa.String(length=255), nullable=False),
        sa.Column("vii_card_hash", sa.String(length=64), nullable=False),
        sa.Column("vii_last4", sa.String(length=4), nullable=False),
        sa.Column("hold_code", sa.String(length=64), nullable=True),
        sa.Column("hold_amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pin_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("shopify_gift_card_id", sa.String(length=255), nullable=True),
        sa.Column("shopify_code_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("shopify_code_last4", sa.String(length=4), nullable=True),
        sa.Column("applied_amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("captured_amount_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="applied", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state = 'applied' OR pin_ciphertext IS NULL",
            name=op.f("ck_shadow_cards_pin_only_while_open"),
        ),
        sa.CheckConstraint(
            "state IN ('applied', 'captured', 'released', 'expired')",
            name=op.f("ck_shadow_cards_state"),
        ),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["gift_cards.id"],
            name=op.f("fk_shadow_cards_card_id_gift_cards"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_cards")),
    )
    op.create_index(
        "ix_shadow_cards_state_expires_at", "shadow_cards", ["state", "expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_shadow_cards_vii_card_hash"), "shadow_cards", ["vii_card_hash"], unique=False
    )
    op.create_index(
        "uq_shadow_cards_live_checkout_card",
        "shadow_cards",
        ["checkout_token", "vii_card_hash"],
        unique=True,
        postgresql_where=sa.text("state = 'applied'"),
    )
    op.create_table(
        "sync_base",
        sa.Column("card_id", sa.UUID(), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["card_id"],
            ["gift_cards.id"],
            name=op.f("fk_sync_base_card_id_gift_cards"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("card_id", name=op.f("pk_sync_base")),
    )


def downgrade() -> None:
    op.drop_table("sync_base")
    op.drop_index(
        "uq_shadow_cards_live_checkout_card",
        table_name="shadow_cards",
        postgresql_where=sa.text("state = 'applied'"),
    )
    op.drop_index(op.f("ix_shadow_cards_vii_card_hash"), table_name="shadow_cards")
    op.drop_index("ix_shadow_cards_state_expires_at", table_name="shadow_cards")
    op.drop_table("shadow_cards")
    op.drop_index("ix_ledger_card_id_created_at", table_name="ledger")
    op.drop_table("ledger")
    op.drop_index(
        "uq_findings_open_subject",
        table_name="findings",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_table("findings")
    op.drop_table("card_links")
    op.drop_table("worker_heartbeats")
    op.drop_index(op.f("ix_webhook_inbox_event_id"), table_name="webhook_inbox")
    op.drop_table("webhook_inbox")
    op.drop_table("sync_cursors")
    op.drop_table("runs")
    op.drop_index("ix_pin_failures_client_address_failed_at", table_name="pin_failures")
    op.drop_index("ix_pin_failures_card_hash_failed_at", table_name="pin_failures")
    op.drop_table("pin_failures")
    op.drop_table("oauth_tokens")
    op.drop_index(
        "ix_jobs_claimable",
        table_name="jobs",
        postgresql_where=sa.text("state IN ('queued', 'running')"),
    )
    op.drop_table("jobs")
    op.drop_table("gift_cards")
