"""Imported by test modules of pure rules (money, merge, crypto, settings): they need no
PostgreSQL, so this overrides the suite's autouse `clean_database` and none is started."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def clean_database() -> None:
    """Nothing to clean: this module never touches a database."""
