"""Card number hashing, PIN encryption and tokens at rest: where secrets are transformed.

A card number is stored only as HMAC-SHA256(CARD_HASH_KEY, digits) plus its last 4 (DESIGN 6).
A PIN is kept AES-GCM-encrypted only while a Vii hold is open (DESIGN 1.B); the associated data
binds each ciphertext to its shadow card, so a ciphertext copied to another row will not open.
Anything else sealed at rest (OAuth tokens) uses its own key derived from PIN_ENCRYPTION_KEY with
HKDF, one per purpose, so no two kinds of data ever share a key with the PINs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.settings import decode_key

_NONCE_BYTES = 12
_KEY_BYTES = 32
_TAG_BYTES = 16
# Fixed and public: HKDF's salt only separates this application's derivations from others'.
_HKDF_SALT = b"giftsync/hkdf/v1"
OAUTH_TOKENS = "oauth-tokens"
# Marks a sealed text value; a stored value without it predates sealing (plain text).
SEALED_PREFIX = "gs1:"


def card_hash(key: str, card_number: str) -> str:
    return hmac.new(key.encode(), card_number.encode(), hashlib.sha256).hexdigest()


def constant_time_equal(left: str | bytes, right: str | bytes) -> bool:
    a = left.encode() if isinstance(left, str) else left
    b = right.encode() if isinstance(right, str) else right
    return hmac.compare_digest(a, b)


class SecretBox:
    """AES-256-GCM with a random nonce per message; `context` is authenticated, not secret."""

    def __init__(self, key: str | bytes) -> None:
        """`key` as PIN_ENCRYPTION_KEY is written (hex or base64), or 32 raw bytes."""
        if isinstance(key, bytes):
            if len(key) != _KEY_BYTES:
                raise ValueError("a raw key must be 32 bytes")
            self._aead = AESGCM(key)
        else:
            self._aead = AESGCM(decode_key(key))

    @classmethod
    def for_purpose(cls, master_key: str, purpose: str) -> SecretBox:
        """A box keyed by `derive_key(PIN_ENCRYPTION_KEY, purpose)`, never by the PIN key itself."""
        return cls(derive_key(decode_key(master_key), purpose))

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


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (HKDF-SHA256); different purposes give unrelated keys."""
    if not purpose:
        raise ValueError("a derived key needs a purpose")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=_KEY_BYTES,
        salt=_HKDF_SALT,
        info=b"giftsync:" + purpose.encode(),
    )
    return hkdf.derive(master)


class TokenSealer:
    """Seals OAuth tokens for a text column, with a key derived for `oauth-tokens`.

    `context` (e.g. "lightspeed:refresh_token") is authenticated, so a sealed value moved to
    another provider or column does not open. Sealed values carry SEALED_PREFIX so rows written
    before sealing can be told apart and read once as plain text.
    """

    def __init__(self, pin_encryption_key: str) -> None:
        self._box = SecretBox.for_purpose(pin_encryption_key, OAUTH_TOKENS)

    def __repr__(self) -> str:
        return "TokenSealer(<key hidden>)"

    def seal(self, token: str, context: str) -> str:
        sealed = self._box.seal(token, context)
        return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def open(self, stored: str, context: str) -> str:
        if not is_sealed(stored):
            raise ValueError("stored value is not sealed")
        try:
            raw = base64.b64decode(
                stored.removeprefix(SEALED_PREFIX), altchars=b"-_", validate=True
            )
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise ValueError("sealed value is damaged")
        return self._box.open(raw, context)


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)
