"""What a successful apply answers (DESIGN 3, `POST /check-balance`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from app.money import from_minor


@dataclass(frozen=True)
class ApplyResult:
    amount_applied: Decimal
    code: str
    code_last4: str
    status: str
    vii_last4: str
    vii_balance: Decimal
    """The Vii balance before this apply."""
    available_balance: Decimal
    """What stays spendable on the Vii card after it."""
    expires_at: datetime
    apply_token: str | None
    """Returned by the first apply of a shadow card only; later calls already hold it."""

    @classmethod
    def of(
        cls,
        *,
        applied_minor: int,
        code: str,
        vii_last4: str,
        vii_balance_minor: int,
        available_minor: int,
        expires_at: datetime,
        apply_token: str | None,
    ) -> ApplyResult:
        return cls(
            amount_applied=from_minor(applied_minor),
            code=code,
            code_last4=code[-4:],
            status="enabled",
            vii_last4=vii_last4,
            vii_balance=from_minor(vii_balance_minor),
            available_balance=from_minor(max(available_minor, 0)),
            expires_at=expires_at,
            apply_token=apply_token,
        )
