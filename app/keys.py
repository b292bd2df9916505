"""`giftsync keys`: fresh values for giftsync's own secrets, ready to paste into `.env`."""

from __future__ import annotations

import hashlib
import secrets

from app.settings.strength import judge_secrets


def generate_keys() -> dict[str, str]:
    """ADMIN_TOKEN, CARD_HASH_KEY and PIN_ENCRYPTION_KEY, each new and passing DESIGN 4's rules.

    Random values pass the rules all but always; drawing again until they do makes it certain.
    """
    while True:
        keys = {
            "ADMIN_TOKEN": secrets.token_urlsafe(32),
            "CARD_HASH_KEY": secrets.token_hex(32),
            "PIN_ENCRYPTION_KEY": secrets.token_hex(32),
        }
        if not judge_secrets(keys):
            return keys


def legacy_passphrase_key(passphrase: str) -> str:
    """The 64-hex PIN_ENCRYPTION_KEY a pre-DESIGN-4 passphrase stood for.

    giftsync once stretched a passphrase of 32+ characters into the key this returns; giving
    the result as PIN_ENCRYPTION_KEY keeps what that passphrase sealed readable.
    """
    return hashlib.sha256(b"giftsync-pin-key:" + passphrase.strip().encode()).hexdigest()
