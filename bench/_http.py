"""A minimal HTTP/1.1 keep-alive client for the load generator.

httpx costs the load generator about 2 ms of CPU per request; on a small machine that CPU is
taken from the service being measured, and the client-side part of it lands in the measured
latency. This client does only what the bench needs (POST a JSON body on one kept-alive
connection, read a Content-Length answer) in a few hundred microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any


class HttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 this client can read."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpConnection:
    """One kept-alive connection, as a shopper's browser holds to the checkout's server."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: Any) -> Answer:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        reader, writer = await self._connection()
        try:
            writer.write(head + payload)
            status_and_headers = await reader.readuntil(b"\r\n\r\n")
            lines = status_and_headers.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if "content-length" not in headers:
                raise HttpError("answer without Content-Length")
            content = await reader.readexactly(int(headers["content-length"]))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self.aclose()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return Answer(status, headers, content)

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # A server closes an idle kept-alive connection (uvicorn after 5 s); its FIN is seen
        # here as EOF, so open a new one as a browser would.
        if self._reader is not None and self._reader.at_eof():
            await self.aclose()
        if self._reader is None or self._writer is None:
            try:
                self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
            except OSError as exc:
                raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        return self._reader, self._writer

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
