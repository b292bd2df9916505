"""The rules giftsync's own secrets must pass before it starts (DESIGN 4).

Every message names the rule, never the value. Placeholders are judged on the whole value only,
so a random token that happens to contain `secret` or `1234` is never refused for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from functools import cache
from itertools import pairwise

from app.settings.values import decode_key

ADMIN_TOKEN_MIN_LENGTH = 32
SHOPIFY_SECRET_MIN_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 10
# The order secrets are compared in: a reused value is reported on the later setting.
OWN_SECRETS = ("ADMIN_TOKEN", "CARD_HASH_KEY", "PIN_ENCRYPTION_KEY", "SHOPIFY_API_SECRET")
KEYS = ("CARD_HASH_KEY", "PIN_ENCRYPTION_KEY")

# Words that templates, tutorials and hurried people put where a secret belongs. A value made
# only of these (and separators, and trailing digits) is a placeholder, however long.
_PLACEHOLDER_WORDS = frozenset(
    {
        "admin", "api", "card", "change", "changeme", "default", "dummy", "encryption", "example",
        "fake", "hash", "here", "insert", "key", "me", "my", "passw0rd", "password", "pin",
        "placeholder", "please", "replace", "sample", "secret", "shopify", "test", "todo",
        "token", "value", "your", "xxx",
    }
)  # fmt: skip
# Runs like 0123..., abcd..., 9876... or a keyboard row, wrapping around.
_RUN_ALPHABETS = (
    "0123456789",
    "0123456789abcdef",
    "0123456789abcdefghijklmnopqrstuvwxyz",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
)
_SEPARATORS = re.compile(r"[\s\-_.:/+=]+")
_KEYS_HINT = "`giftsync keys` prints fresh values"
_SHOPIFY_HINT = "copy the app's client secret from the Shopify Dev Dashboard"


def _is_run(text: str) -> bool:
    for alphabet in _RUN_ALPHABETS:
        for order in (alphabet, alphabet[::-1]):
            if all(char in order for char in text) and all(
                order[(order.index(a) + 1) % len(order)] == b for a, b in pairwise(text)
            ):
                return True
    return False


def _only_words(text: str) -> bool:
    """Whether `text` splits entirely into placeholder words (word-break over a small set)."""

    @cache
    def splits(start: int) -> bool:
        if start == len(text):
            return True
        return any(
            text.startswith(word, start) and splits(start + len(word))
            for word in _PLACEHOLDER_WORDS
        )

    return splits(0)


def is_placeholder(value: str) -> bool:
    """One repeated character, a run, or nothing but placeholder words (trailing digits allowed)."""
    text = value.strip().lower()
    compact = _SEPARATORS.sub("", text)
    for form in (text, compact):
        # Two characters make a repetition and three a run; shorter is only "too short".
        if (len(form) >= 2 and len(set(form)) == 1) or (len(form) >= 3 and _is_run(form)):
            return True
    words = compact.rstrip("0123456789")
    return bool(words) and _only_words(words)


def _distinct(name: str, value: str) -> list[str]:
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return [f"{name}: too few distinct characters (at least {MIN_DISTINCT_CHARACTERS})"]
    return []


def _placeholder(name: str, hint: str = _KEYS_HINT) -> list[str]:
    return [
        f"{name}: a placeholder, not a secret (a word such as changeme, password or secret, "
        f"one repeated character, or a run like 0123...); {hint}"
    ]


def judge_admin_token(value: str) -> list[str]:
    if is_placeholder(value):
        return _placeholder("ADMIN_TOKEN")
    problems: list[str] = []
    if len(value) < ADMIN_TOKEN_MIN_LENGTH:
        problems.append(
            f"ADMIN_TOKEN: too short (at least {ADMIN_TOKEN_MIN_LENGTH} characters); {_KEYS_HINT}"
        )
    return problems + _distinct("ADMIN_TOKEN", value)


def judge_key(name: str, value: str) -> list[str]:
    """CARD_HASH_KEY and PIN_ENCRYPTION_KEY: 32 bytes as 64 hex or base64, and not weak."""
    if is_placeholder(value):
        return _placeholder(name)
    problems: list[str] = []
    try:
        decode_key(value)
    except ValueError as exc:
        problems.append(f"{name}: {exc}; {_KEYS_HINT}")
    return problems + _distinct(name, value.strip())


def judge_shopify_secret(value: str) -> list[str]:
    """Shopify makes this one; only what a copy-paste slip or a template would give is refused."""
    if is_placeholder(value):
        return _placeholder("SHOPIFY_API_SECRET", _SHOPIFY_HINT)
    if len(value.strip()) < SHOPIFY_SECRET_MIN_LENGTH:
        return [
            f"SHOPIFY_API_SECRET: too short (at least {SHOPIFY_SECRET_MIN_LENGTH} characters); "
            + _SHOPIFY_HINT
        ]
    return []


def _fingerprints(name: str, value: str) -> set[object]:
    """What counts as the same value: the text, and for a key also the 32 bytes it stands for."""
    found: set[object] = {value.strip()}
    if name in KEYS:
        with suppress(ValueError):
            found.add(decode_key(value))
    return found


def reused(values: Mapping[str, str]) -> list[str]:
    """One line for each secret that repeats an earlier one of OWN_SECRETS."""
    problems: list[str] = []
    seen: list[tuple[str, set[object]]] = []
    for name in OWN_SECRETS:
        if name not in values:
            continue
        prints = _fingerprints(name, values[name])
        for earlier, earlier_prints in seen:
            if prints & earlier_prints:
                problems.append(
                    f"{name}: same value as {earlier}; every secret needs its own ({_KEYS_HINT})"
                )
                break
        seen.append((name, prints))
    return problems


def judge_secrets(values: Mapping[str, str]) -> list[str]:
    """Every problem with the given secrets (setting name -> value), each on its own line."""
    problems: list[str] = []
    if "ADMIN_TOKEN" in values:
        problems += judge_admin_token(values["ADMIN_TOKEN"])
    for name in KEYS:
        if name in values:
            problems += judge_key(name, values[name])
    if "SHOPIFY_API_SECRET" in values:
        problems += judge_shopify_secret(values["SHOPIFY_API_SECRET"])
    return problems + reused(values)
