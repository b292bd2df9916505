from __future__ import annotations

import base64

import pytest

from app.crypto import (
    OAUTH_TOKENS,
    SEALED_PREFIX,
    SecretBox,
    TokenSealer,
    card_hash,
    constant_time_equal,
    derive_key,
    is_sealed,
)
from app.keys import legacy_passphrase_key
from tests.conftest import PIN_KEY_HEX
from tests.pure import clean_database  # noqa: F401


def test_card_hash_is_keyed_and_stable() -> None:
    a = card_hash("key-one-0123456789", "6280001234567890")
    assert a == card_hash("key-one-0123456789", "6280001234567890")
    assert a != card_hash("key-two-0123456789", "6280001234567890")
    assert len(a) == 64
    assert "6280001234567890" not in a


def test_pin_round_trips_and_is_bound_to_its_context() -> None:
    box = SecretBox(PIN_KEY_HEX)
    sealed = box.seal("1234", "shadow:abc")
    assert b"1234" not in sealed
    assert box.open(sealed, "shadow:abc") == "1234"
    assert box.seal("1234", "shadow:abc") != sealed  # fresh nonce every time
    with pytest.raises(ValueError, match="does not open"):
        box.open(sealed, "shadow:other")
    with pytest.raises(ValueError):
        SecretBox("ff" * 32).open(sealed, "shadow:abc")
    assert PIN_KEY_HEX not in repr(box)


def test_constant_time_equal() -> None:
    assert constant_time_equal("abc", b"abc") and not constant_time_equal("abc", "abd")


# Sealed before issue 16 (nonce 00..0b, AES-256-GCM, context as associated data): PINs and OnSite
# serials stored by earlier versions must keep opening with the same PIN_ENCRYPTION_KEY.
STORED_PIN = "000102030405060708090a0b222b8707211e4ed8862caff94e91729ae84b2f48"
# Sealed under a passphrase-stretched key, which PIN_ENCRYPTION_KEY no longer accepts as such.
STORED_UNDER_PASSPHRASE = "000102030405060708090a0b1701e3cb72bfa1ed844a9c636d319436f26a0ce9"
PASSPHRASE = "an old passphrase of more than thirty-two characters"


def test_pins_sealed_by_earlier_versions_still_open() -> None:
    assert SecretBox(PIN_KEY_HEX).open(bytes.fromhex(STORED_PIN), "shadow:vector") == "4321"
    as_base64 = base64.b64encode(bytes.fromhex(PIN_KEY_HEX)).decode()
    assert SecretBox(as_base64).open(bytes.fromhex(STORED_PIN), "shadow:vector") == "4321"


def test_a_former_passphrase_opens_what_it_sealed_once_converted() -> None:
    box = SecretBox(legacy_passphrase_key(PASSPHRASE))
    sealed = bytes.fromhex(STORED_UNDER_PASSPHRASE)
    assert box.open(sealed, "pos_card_balances:onsite:1") == "8765"


def test_derived_keys_differ_per_purpose_and_from_the_master() -> None:
    master = bytes.fromhex(PIN_KEY_HEX)
    tokens = derive_key(master, OAUTH_TOKENS)
    assert len(tokens) == 32
    assert tokens == derive_key(master, "oauth-tokens")  # deterministic: stored data reopens
    assert tokens != master
    assert tokens != derive_key(master, "sessions")
    assert tokens != derive_key(bytes.fromhex("ff" * 32), OAUTH_TOKENS)
    with pytest.raises(ValueError, match="purpose"):
        derive_key(master, "")


def test_derivation_is_hkdf_sha256_with_giftsync_s_salt_and_info() -> None:
    """Pinned, so a later refactor cannot silently change the key stored tokens need."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    master = bytes.fromhex(PIN_KEY_HEX)
    expected = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"giftsync/hkdf/v1",
        info=b"giftsync:oauth-tokens",
    ).derive(master)
    assert derive_key(master, OAUTH_TOKENS) == expected


def test_oauth_tokens_are_sealed_with_the_derived_key_never_the_pin_key() -> None:
    sealer = TokenSealer(PIN_KEY_HEX)
    stored = sealer.seal("ls-refresh-token-abc123", "lightspeed:refresh_token")
    assert stored.startswith(SEALED_PREFIX) and is_sealed(stored)
    assert "ls-refresh-token-abc123" not in stored
    assert sealer.open(stored, "lightspeed:refresh_token") == "ls-refresh-token-abc123"
    raw = base64.urlsafe_b64decode(stored.removeprefix(SEALED_PREFIX))
    with pytest.raises(ValueError, match="does not open"):
        SecretBox(PIN_KEY_HEX).open(raw, "lightspeed:refresh_token")  # the PIN key opens nothing
    derived = SecretBox(derive_key(bytes.fromhex(PIN_KEY_HEX), OAUTH_TOKENS))
    assert derived.open(raw, "lightspeed:refresh_token") == "ls-refresh-token-abc123"
    assert PIN_KEY_HEX not in repr(sealer)


def test_sealed_tokens_are_bound_to_their_context_and_key() -> None:
    sealer = TokenSealer(PIN_KEY_HEX)
    stored = sealer.seal("shpca_token", "shopify:access_token")
    with pytest.raises(ValueError, match="does not open"):
        sealer.open(stored, "lightspeed:access_token")
    with pytest.raises(ValueError, match="does not open"):
        TokenSealer("ab" * 32).open(stored, "shopify:access_token")
    with pytest.raises(ValueError, match="not sealed"):
        sealer.open("plain-refresh-token", "shopify:access_token")
    with pytest.raises(ValueError, match="damaged"):
        sealer.open(SEALED_PREFIX + "!!!", "shopify:access_token")
    assert is_sealed("plain-refresh-token") is False


def test_raw_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"short")
