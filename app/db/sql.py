"""Small helpers every repository shares."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import TextClause, text

# text() parses its SQL for bind parameters on every call; repositories run the same constant
# statements on every request, so each is built once.
sql: Any = functools.cache(text)


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (CursorResult.rowcount, absent on other results)."""
    return int(getattr(result, "rowcount", 0) or 0)


__all__ = ["TextClause", "rowcount", "sql"]
