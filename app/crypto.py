"""Card number hashing and PIN encryption: the only places card secrets are transformed.

A card number is stored only as HMAC-SHA256(CARD_HASH_KEY, digits) plus its last 4 (DESIGN 6).
A PIN is kept AES-GCM-encrypted only while a Vii hold is open (DESIGN 1.B); the associated data
binds each ciphertext to its shadow card, so a ciphertext copied to another row will not open.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.settings import decode_key

_NONCE_BYTES = 12


def card_hash(key: str, card_number: str) -> str:
    return hmac.new(key.encode(), card_number.encode(), hashlib.sha256).hexdigest()


def constant_time_equal(left: str | bytes, right: str | bytes) -> bool:
    a = left.encode() if isinstance(left, str) else left
    b = right.encode() if isinstance(right, str) else right
    return hmac.compare_digest(a, b)


class SecretBox:
    """AES-256-GCM with a random nonce per message; `context` is authenticated, not secret."""

    def __init__(self, key: str) -> None:
        self._aead = AESGCM(decode_key(key))

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        try:
            plain = self._aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context.encode()
            )
        except InvalidTag:
            raise ValueError("sealed value does not open with this key and context") from None
        return plain.decode()
