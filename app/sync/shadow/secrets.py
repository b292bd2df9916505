"""The secrets of a shadow card: its Shopify code, its apply token, and how they are sealed.

Named for what it holds; nothing here shadows the stdlib `secrets`, which it uses.
"""

from __future__ import annotations

import secrets
import string
import uuid
from dataclasses import dataclass

from app.crypto import SecretBox, card_hash, constant_time_equal

_CODE_ALPHABET = string.ascii_lowercase + string.digits
_CODE_RANDOM_CHARS = 13  # 13 * log2(36) = 67 random bits, above the 64 DESIGN asks for


def new_shadow_code(vii_last4: str) -> str:
    """Random part first, Vii last 4 at the end: what Shopify shows is what the shopper knows."""
    random_part = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(_CODE_RANDOM_CHARS))
    return random_part + vii_last4


def new_apply_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class ShadowSecrets:
    """Seals what a shadow card must keep (PIN, card number, code) and hashes what it checks."""

    box: SecretBox
    hash_key: str

    def card_hash(self, card_number: str) -> str:
        return card_hash(self.hash_key, card_number)

    def apply_token_hash(self, shadow_id: uuid.UUID | str, token: str) -> str:
        return card_hash(self.hash_key, f"apply-token:{shadow_id}:{token}")

    def apply_token_matches(self, row_id: uuid.UUID | str, stored: str | None, token: str) -> bool:
        return stored is not None and constant_time_equal(
            stored, self.apply_token_hash(row_id, token)
        )

    def seal_pin(self, shadow_id: uuid.UUID | str, pin: str) -> bytes:
        return self.box.seal(pin, f"pin:{shadow_id}")

    def open_pin(self, shadow_id: uuid.UUID | str, sealed: bytes) -> str:
        return self.box.open(sealed, f"pin:{shadow_id}")

    def seal_number(self, shadow_id: uuid.UUID | str, number: str) -> bytes:
        return self.box.seal(number, f"number:{shadow_id}")

    def open_number(self, shadow_id: uuid.UUID | str, sealed: bytes) -> str:
        return self.box.open(sealed, f"number:{shadow_id}")

    def seal_code(self, shadow_id: uuid.UUID | str, code: str) -> bytes:
        return self.box.seal(code, f"code:{shadow_id}")

    def open_code(self, shadow_id: uuid.UUID | str, sealed: bytes) -> str:
        return self.box.open(sealed, f"code:{shadow_id}")
