from __future__ import annotations

import pytest

from app.crypto import SecretBox, card_hash, constant_time_equal
from tests.conftest import PIN_KEY_HEX


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
