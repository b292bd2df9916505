"""Variables that look meant for giftsync but are not its settings: probable misspellings.

A misspelled upstream setting must stop the start, not quietly leave giftsync unconfigured (and
so in sandbox mode, generating keys next to a production database).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dotenv import dotenv_values

# Prefixes only giftsync's settings use; any other variable under them is a mistake.
OWN_PREFIXES = ("SHOPIFY_", "LIGHTSPEED_", "ONSITE_", "VII_")
# Shopify CLI's own variables (its settings and `--flag` values), not giftsync's.
FOREIGN_PREFIXES = ("SHOPIFY_CLI_", "SHOPIFY_FLAG_")
# Names other Shopify tooling uses for what giftsync calls otherwise; closeness would not find them.
_KNOWN_ALIASES = {
    "SHOPIFY_API_KEY": "SHOPIFY_CLIENT_ID",
    "SHOPIFY_APP_URL": "PUBLIC_URL",
    "SHOPIFY_ACCESS_TOKEN": "SHOPIFY_ADMIN_TOKEN",
    "SHOPIFY_SHOP": "SHOPIFY_SHOP_DOMAIN",
    "SHOPIFY_STORE": "SHOPIFY_SHOP_DOMAIN",
}


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent swaps counting one (optimal string alignment)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _allowed_distance(a: str, b: str) -> int:
    # Two edits turn PLAN into PATH or LANG: short names get one, or every shell would trip it.
    return 1 if min(len(a), len(b)) < 8 else 2


def _closest(name: str, known: Iterable[str]) -> tuple[str, int]:
    scored = [(k, edit_distance(name, k)) for k in known]
    return min(scored, key=lambda pair: (pair[1], pair[0]), default=("", len(name)))


EnvFiles = str | Path | Sequence[str | Path] | None


def given_names(environ: Mapping[str, str], env_files: EnvFiles) -> set[str]:
    """Every variable name giftsync can see: the process environment and the `.env` files."""
    names = {name.upper() for name in environ}
    if env_files is None:
        return names
    paths = [env_files] if isinstance(env_files, str | Path) else list(env_files)
    for path in paths:
        if Path(path).is_file():
            names |= {name.upper() for name in dotenv_values(path)}
    return names


def misspellings(names: Iterable[str], known: Iterable[str]) -> list[str]:
    """One line per variable that is probably a misspelt giftsync setting, naming the variable."""
    own = sorted({name.upper() for name in known})
    problems: list[str] = []
    for name in sorted(set(names) - set(own)):
        if name.startswith(FOREIGN_PREFIXES):
            continue
        if name.startswith(OWN_PREFIXES):
            prefix = next(p for p in OWN_PREFIXES if name.startswith(p))
            suggestion = _KNOWN_ALIASES.get(name)
            if suggestion is None:
                suggestion, _ = _closest(name, [k for k in own if k.startswith(prefix)] or own)
            problems.append(f"{name}: unknown setting, did you mean {suggestion}?")
            continue
        # Lengths further apart than two cannot be within two edits: skip the work at startup.
        near = [k for k in own if abs(len(k) - len(name)) <= 2]
        candidate, distance = _closest(name, near)
        if candidate and distance <= _allowed_distance(name, candidate):
            problems.append(
                f"{name}: not a giftsync setting; probably a misspelling of {candidate}"
            )
    return problems


def scan(known: Iterable[str], env_files: EnvFiles) -> list[str]:
    return misspellings(given_names(os.environ, env_files), known)
