"""The schema of DESIGN section 6. Money is always signed integer minor units (`*_minor`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, datetime: DateTime(timezone=True)}  # noqa: RUF012


def _created() -> Mapped[datetime]:
    return mapped_column(server_default=func.now(), nullable=False)


class GiftCard(Base):
    """One logical card, whatever systems it lives in."""

    __tablename__ = "gift_cards"
    __table_args__ = (
        CheckConstraint("kind IN ('omni', 'vii_shadow')", name="kind"),
        CheckConstraint("state IN ('active', 'deactivated')", name="state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    state: Mapped[str] = mapped_column(String(16), server_default="active")
    customer_email: Mapped[str | None] = mapped_column(String(320), index=True)
    """Lower-cased; lets store staff find the online card a shopper shows in store."""
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class CardLink(Base):
    """Where a card lives in one external system, and what that system last said of it."""

    __tablename__ = "card_links"
    __table_args__ = (
        UniqueConstraint("system", "external_id", name="uq_card_links_system_external_id"),
        UniqueConstraint("card_id", "system", name="uq_card_links_card_id_system"),
        CheckConstraint("system IN ('shopify', 'lightspeed', 'onsite', 'vii')", name="system"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    card_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gift_cards.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(255))
    code_last4: Mapped[str | None] = mapped_column(String(4))
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    """Keyed hash of the card's code or serial in this system (`app.crypto.card_hash`)."""
    last_seen_balance_minor: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_status: Mapped[str | None] = mapped_column(String(16))
    last_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created()


class LedgerEntry(Base):
    """Append-only record of every balance move giftsync made or saw, keyed by its cause."""

    __tablename__ = "ledger"
    __table_args__ = (Index("ix_ledger_card_id_created_at", "card_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    card_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gift_cards.id", ondelete="CASCADE"))
    system: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    cause: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _created()


class SyncBase(Base):
    """The last balance every system agreed on, and a version that keys merge writes."""

    __tablename__ = "sync_base"

    card_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("gift_cards.id", ondelete="CASCADE"), primary_key=True
    )
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ShadowCard(Base):
    """A Shopify card standing in for a Vii hold during one checkout.

    `pending` is the durable intent written before the hold is placed (the worker completes or
    reverses it); `applied` is live; `captured`, `released`, `expired` and `abandoned` say why it
    was closed. A closed card keeps its PIN until `settled_at`: Vii needs it to capture.
    """

    __tablename__ = "shadow_cards"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'applied', 'captured', 'released', 'expired', 'abandoned')",
            name="state",
        ),
        CheckConstraint(
            "settled_at IS NULL OR pin_ciphertext IS NULL", name="pin_only_until_settled"
        ),
        Index(
            "uq_shadow_cards_live_checkout_card",
            "checkout_token",
            "vii_card_hash",
            unique=True,
            postgresql_where=text("state = 'applied'"),
        ),
        Index("ix_shadow_cards_state_expires_at", "state", "expires_at"),
        Index("ix_shadow_cards_unsettled", "state", postgresql_where=text("settled_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    card_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gift_cards.id", ondelete="CASCADE"))
    checkout_token: Mapped[str] = mapped_column(String(255))
    vii_card_hash: Mapped[str] = mapped_column(String(64), index=True)
    vii_last4: Mapped[str] = mapped_column(String(4))
    hold_code: Mapped[str | None] = mapped_column(String(64))
    hold_amount_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    hold_tran_id: Mapped[str | None] = mapped_column(String(64))
    """The viiTranId of the last pre-authorisation sent: Undo reverses it if its answer was lost."""
    pin_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    shopify_gift_card_id: Mapped[str | None] = mapped_column(String(255))
    shopify_code_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    shopify_code_last4: Mapped[str | None] = mapped_column(String(4))
    apply_token_hash: Mapped[str | None] = mapped_column(String(64))
    """Keyed hash of the token the first apply returned; it stands in for the PIN on re-sizes."""
    applied_amount_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    loaded_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Net amount giftsync put on the Shopify card (create + credits - debits): spent = this -
    balance."""
    vii_balance_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    card_number_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Vii needs the number to capture or cancel; sealed like the PIN, erased when settled."""
    version: Mapped[int] = mapped_column(Integer, server_default="0")
    applied_unconfirmed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    """A Shopify move whose outcome is unknown: it is looked up before the next move."""
    unconfirmed_move_key: Mapped[str | None] = mapped_column(String(255))
    unconfirmed_move_minor: Mapped[int | None] = mapped_column(BigInteger)
    unconfirmed_move_at: Mapped[datetime | None]
    """When the pending move was sent: until it is old, not finding it proves nothing."""
    captured_amount_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    state: Mapped[str] = mapped_column(String(16), server_default="applied")
    expires_at: Mapped[datetime]
    settled_at: Mapped[datetime | None]
    final_balance_minor: Mapped[int | None] = mapped_column(BigInteger)
    refunds_on_card_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Refunds Shopify credited to the card before it was deactivated (netted by the capture)."""
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class CardLockout(Base):
    """A Vii card locked after too many wrong PINs in a day; only an operator clears it."""

    __tablename__ = "card_lockouts"

    vii_card_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    vii_last4: Mapped[str] = mapped_column(String(4))
    locked_at: Mapped[datetime] = mapped_column(server_default=func.now())
    cleared_at: Mapped[datetime | None]
    cleared_by: Mapped[str | None] = mapped_column(String(128))


class WebhookDelivery(Base):
    """The webhook inbox: each Shopify delivery stored once, then processed by a worker."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        Index(
            "uq_webhook_inbox_topic_event_id",
            "topic",
            "event_id",
            unique=True,
            postgresql_where=text("event_id IS NOT NULL"),
        ),
        Index(
            "uq_webhook_inbox_topic_body_sha256",
            "topic",
            "body_sha256",
            unique=True,
            postgresql_where=text("body_sha256 IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(String(255), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(128))
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    """A signed body replayed under new headers (only the body is signed) is the same delivery."""
    shop_domain: Mapped[str | None] = mapped_column(String(255))
    triggered_at: Mapped[datetime | None]
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = _created()
    processed_at: Mapped[datetime | None]


class Job(Base):
    """The outbox and work queue: one row per external write or unit of background work."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'done', 'dead')", name="state"),
        Index(
            "ix_jobs_claimable",
            "run_at",
            postgresql_where=text("state IN ('queued', 'running')"),
        ),
        Index(
            "ix_jobs_unfinished_card_id",
            text("(payload->>'card_id')"),
            postgresql_where=text("state <> 'done'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    state: Mapped[str] = mapped_column(String(16), server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="8")
    run_at: Mapped[datetime] = mapped_column(server_default=func.now())
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    finished_at: Mapped[datetime | None]


class SyncCursor(Base):
    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class OAuthToken(Base):
    """Rotated OAuth tokens; the refresh token here outranks the one in the settings."""

    __tablename__ = "oauth_tokens"

    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token: Mapped[str | None] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class Run(Base):
    """A reconcile or backfill run, with its progress and counts."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint("kind IN ('reconcile', 'backfill')", name="kind"),
        CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    counts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    progress: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Finding(Base):
    """Something a run could not repair; open until a later run sees it fixed."""

    __tablename__ = "findings"
    __table_args__ = (
        Index(
            "uq_findings_open_subject",
            "type",
            "subject",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    card_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("gift_cards.id", ondelete="SET NULL")
    )
    first_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id"))
    last_run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id"))
    evidence: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = _created()
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    """The operator who resolved it by hand; None when a later run saw it fixed."""
    resolution_note: Mapped[str | None] = mapped_column(Text)


class PosCardBalance(Base):
    """A POS card's balance as giftsync projects it from what the POS reported (OnSite).

    OnSite has no gift card resource: a card is a serial on invoice lines and payments, so its
    balance is the sum of every invoice seen, each counted once (`pos_seen_moves`).
    """

    __tablename__ = "pos_card_balances"

    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    serial_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    code_last4: Mapped[str] = mapped_column(String(4))
    balance_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="enabled")
    customer_id: Mapped[str | None] = mapped_column(String(255))
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class PosSeenMove(Base):
    """One balance move read from a POS (an OnSite invoice line or payment), counted once."""

    __tablename__ = "pos_seen_moves"

    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    move_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = _created()


class PinFailure(Base):
    """One failed PIN attempt; counted per card hash and per client address across replicas."""

    __tablename__ = "pin_failures"
    __table_args__ = (
        Index("ix_pin_failures_card_hash_failed_at", "vii_card_hash", "failed_at"),
        Index("ix_pin_failures_client_address_failed_at", "client_address", "failed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    vii_card_hash: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WorkerHeartbeat(Base):
    """One row per live worker; `/readyz` reads the freshest."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime] = _created()
    beat_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Operator(Base):
    """A named operator token (only its hash is kept); ADMIN_TOKEN is the first operator."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Append-only (a trigger refuses UPDATE and DELETE): every operator action that changes
    anything, who, when, from where, and a hash of what was sent."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = _created()
    operator: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    body_sha256: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))


class AuthFailure(Base):
    """A failed operator sign-in (bearer or console), counted per address."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_address_failed_at", "address", "failed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    failed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ConsoleSession(Base):
    """A signed-in console browser; the cookie holds the id, only its hash is kept here."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_last_seen_at", "last_seen_at"),)

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator: Mapped[str] = mapped_column(String(64))
    csrf_token: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime | None] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[datetime] = _created()


class MerchantSetting(Base):
    """A merchant setting of DESIGN 1.A saved in the console; it outranks the environment."""

    __tablename__ = "merchant_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = _created()


class AlertState(Base):
    """When the last alert digest left (one row per digest kind), shared by every worker."""

    __tablename__ = "alert_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_sent_at: Mapped[datetime | None]


class AlertSent(Base):
    """What a digest already told: a finding once, a dead job once per death (`marker`)."""

    __tablename__ = "alerts_sent"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    marker: Mapped[str] = mapped_column(String(64), primary_key=True)
    sent_at: Mapped[datetime] = _created()
