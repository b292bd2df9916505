"""The delivery policy: how each failure is read, on plain httpx against a real socket server
that misbehaves on demand, and what the policy then does (retry, look up, resend once).

What matters for money is the line between "not sent" (safe to send again) and "answer lost"
(the write may have been applied): every failure a real connection can produce must land on the
right side of it. Waits are driven by events, never measured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import tenacity.wait
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.clients.delivery import (
    AnswerLost,
    Delivery,
    NotSent,
    Undelivered,
    check_status,
    classify,
    new_http_client,
    retry_after,
    transmit,
)
from app.clients.errors import UnknownOutcome, UpstreamUnavailable
from app.clients.onsite import OnSiteClient

Behaviour = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _answer(status: int, body: bytes, *headers: str, reason: str = "OK") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class RawServer:
    """An HTTP/1.1 server on a real socket; `behaviour` decides what each request gets."""

    behaviour: Behaviour
    requests: list[bytes] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[bytes]:
        return [request.split(b" ")[1] for request in self.requests]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                self.arrived.set()
                await self.behaviour(request, reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def ok(request: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_answer(200, b'{"ok": true}', "Content-Type: application/json"))
    await writer.drain()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Behaviour], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(behaviour: Behaviour) -> RawServer:
        server = RawServer(behaviour)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def client(timeout: httpx.Timeout | float = 5.0, connections: int = 20) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=timeout, limits=httpx.Limits(max_connections=connections, keepalive_expiry=5.0)
    )


async def attempt(call: Awaitable[httpx.Response], deadline: float = 5.0) -> httpx.Response:
    """One attempt as every client makes it: the exchange, then the status line read."""
    response = await transmit(call, deadline=deadline)
    check_status(response)
    return response


# --- not sent: nothing reached the upstream ------------------------------------------------


async def test_a_refused_connection_is_not_sent() -> None:
    # A port that was just free: nobody listens on it.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with client() as http:
        with pytest.raises(NotSent):
            await attempt(http.post(f"http://127.0.0.1:{port}/", content=b"debit 10.00"))


async def test_no_pooled_connection_in_time_is_not_sent(serve) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()

    async def held(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await release.wait()
        await ok(request, reader, writer)

    server = await serve(held)
    # One connection, taken by the first request until the server is told to answer it.
    async with client(httpx.Timeout(5.0, pool=0.01), connections=1) as http:
        first = asyncio.create_task(attempt(http.post(server.url("/first"), content=b"a")))
        await server.arrived.wait()
        with pytest.raises(NotSent):
            await attempt(http.post(server.url("/second"), content=b"b"))
        release.set()
        assert (await first).status_code == 200
    assert server.paths() == [b"/first"]


async def test_an_unverifiable_certificate_is_not_sent_and_onsite_can_switch_it_off(
    tmp_path: Path,
) -> None:
    server = RawServer(ok)
    await server.start(tls=_self_signed(tmp_path))
    try:
        async with client() as strict:
            with pytest.raises(NotSent):
                await attempt(strict.get(server.url(scheme="https")))
        assert server.requests == []
        # OnSite servers often run on a shop's own certificate: its switch reaches the wire.
        onsite = OnSiteClient(
            server.url(scheme="https"), "user", "secret", "giftsync", None, verify_tls=False
        )
        try:
            answer = await onsite._http.get("/")  # the client's own connection settings
        finally:
            await onsite.aclose()
        assert answer.status_code == 200
    finally:
        await server.stop()


@pytest.mark.parametrize("status", [429, 503])
async def test_429_and_503_say_nothing_was_done(serve, status: int) -> None:  # type: ignore[no-untyped-def]
    async def busy(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(status, b"busy", "Retry-After: 3", reason="Busy"))
        await writer.drain()

    server = await serve(busy)
    async with client() as http:
        with pytest.raises(NotSent) as caught:
            await attempt(http.post(server.url(), content=b"x"))
    assert caught.value.retry_after == 3.0


# --- answer lost: the request may have been applied ----------------------------------------


async def test_a_server_that_hangs_up_after_reading_is_a_lost_answer(serve) -> None:  # type: ignore[no-untyped-def]
    async def hang_up(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await serve(hang_up)
    async with client() as http:
        with pytest.raises(AnswerLost):
            await attempt(http.post(server.url(), content=b"debit 10.00"))
    assert len(server.requests) == 1  # it did arrive: resending could apply it twice


async def test_silence_after_the_request_is_a_lost_answer(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(_: bytes, reader: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    server = await serve(silent)
    async with client(httpx.Timeout(5.0, read=0.05)) as http:
        with pytest.raises(AnswerLost, match="ReadTimeout"):
            await attempt(http.post(server.url(), content=b"x"))
    assert len(server.requests) == 1


async def test_garbage_instead_of_http_is_a_lost_answer(serve) -> None:  # type: ignore[no-untyped-def]
    async def garbage(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"<html>not http at all</html>\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await serve(garbage)
    async with client() as http:
        with pytest.raises(AnswerLost):
            await attempt(http.post(server.url(), content=b"x"))


async def test_a_body_cut_short_is_a_lost_answer_and_the_next_call_works(serve) -> None:  # type: ignore[no-untyped-def]
    async def cut(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if b" /cut " in request:
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
            await writer.drain()
            writer.close()
        else:
            await ok(request, reader, writer)

    server = await serve(cut)
    async with client() as http:
        with pytest.raises(AnswerLost):
            await attempt(http.post(server.url("/cut"), content=b"x"))
        assert (await attempt(http.get(server.url("/fine")))).json() == {"ok": True}


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_other_5xx_may_come_after_the_work_was_done(serve, status: int) -> None:  # type: ignore[no-untyped-def]
    async def failed(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(status, b"oops", reason="Error"))
        await writer.drain()

    server = await serve(failed)
    async with client() as http:
        with pytest.raises(AnswerLost):
            await attempt(http.post(server.url(), content=b"x"))


async def test_the_callers_deadline_mid_answer_is_lost_and_frees_the_connection(serve) -> None:  # type: ignore[no-untyped-def]
    async def stalls_mid_body(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if b" /stall " in request:
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
            await writer.drain()
            await reader.read()  # never finishes the body
        else:
            await ok(request, reader, writer)

    server = await serve(stalls_mid_body)
    # One connection: if the abandoned call kept it, every later call would wait for it.
    async with client(httpx.Timeout(5.0, pool=1.0), connections=1) as http:
        for _ in range(3):
            with pytest.raises(AnswerLost, match="TimeoutError"):
                await attempt(http.get(server.url("/stall")), deadline=0.05)
        assert (await attempt(http.get(server.url("/fine")))).json() == {"ok": True}


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (httpx.ConnectError("refused"), NotSent),
        (httpx.ConnectTimeout("slow handshake"), NotSent),
        (httpx.PoolTimeout("pool full"), NotSent),
        (httpx.ProxyError("proxy refused"), NotSent),
        (httpx.UnsupportedProtocol("ftp"), NotSent),
        (httpx.ReadTimeout("slow"), AnswerLost),
        (httpx.WriteTimeout("slow"), AnswerLost),
        (httpx.ReadError("reset"), AnswerLost),
        (httpx.WriteError("broken pipe"), AnswerLost),
        (httpx.RemoteProtocolError("dropped"), AnswerLost),
        (httpx.LocalProtocolError("bad request"), AnswerLost),
        (TimeoutError(), AnswerLost),
    ],
)
def test_every_transport_failure_has_one_reading(
    failure: BaseException, kind: type[Undelivered]
) -> None:
    assert type(classify(failure)) is kind


def test_retry_after_reads_seconds_and_dates() -> None:
    def of(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"Retry-After": value}))

    assert of("7") == 7.0
    assert of("1.5") == 1.5
    assert of("-3") == 0.0
    assert of("soon") is None
    assert retry_after(httpx.Response(503)) is None
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    later = email.utils.format_datetime(now + dt.timedelta(hours=1), usegmt=True)
    dated = httpx.Response(503, headers={"Retry-After": later})
    assert retry_after(dated, now=now) == 3600.0
    assert retry_after(dated, now=now + dt.timedelta(hours=2)) == 0.0


async def test_proxies_come_from_the_environment_as_httpx_reads_them(
    serve,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = await serve(ok)
    target = await serve(ok)
    for name in ("http_proxy", "all_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    async with new_http_client(timeout=5.0) as http:
        assert (await http.get("http://shop.example.test/x")).status_code == 200
    assert proxy.requests[0].startswith(b"GET http://shop.example.test/x HTTP/1.1")

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with new_http_client(timeout=5.0) as http:
        assert (await http.get(target.url("/direct"))).status_code == 200
    assert target.requests[0].startswith(b"GET /direct HTTP/1.1")
    assert len(proxy.requests) == 1


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


# --- the policy: what follows each reading ---------------------------------------------------


class Unavailable(UpstreamUnavailable):
    upstream = "test"


class Unknown(UnknownOutcome):
    upstream = "test"


@dataclass
class Upstream:
    """Scripted attempts: each item is what one send does (an exception or a result)."""

    script: list[object]
    applied: list[str] = field(default_factory=list)
    sends: int = 0
    look_ups: int = 0
    found: str | None = None
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def policy(self, *, attempts: int = 3, backoff: float = 0.0) -> Delivery:
        return Delivery("test", Unavailable, Unknown, attempts, backoff, self.sleep)

    async def send(self) -> str:
        self.sends += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return str(step)

    async def look_up(self) -> str | None:
        self.look_ups += 1
        return self.found


async def test_a_request_not_sent_is_sent_again_within_the_attempts() -> None:
    upstream = Upstream([NotSent("refused"), NotSent("refused"), "done"])
    assert await upstream.policy().call(upstream.send, what="read") == "done"
    assert upstream.sends == 3


async def test_out_of_attempts_is_unavailable_with_the_last_hint() -> None:
    upstream = Upstream([NotSent("busy"), AnswerLost("reset"), NotSent("busy", retry_after=0.0)])
    with pytest.raises(Unavailable) as caught:
        await upstream.policy().call(upstream.send, what="read")
    assert upstream.sends == 3
    assert caught.value.retry_after == 0.0 and "read: busy" in str(caught.value)


async def test_a_lost_answer_is_sent_again_only_when_the_request_may_be_repeated() -> None:
    repeatable = Upstream([AnswerLost("reset"), "done"])
    assert await repeatable.policy().call(repeatable.send, what="read") == "done"
    once = Upstream([AnswerLost("reset"), "done"])
    with pytest.raises(AnswerLost):
        await once.policy().call(once.send, what="write", repeatable=False)
    assert once.sends == 1


@pytest.mark.parametrize("draw", ["lowest", "highest"])
async def test_backoff_is_jittered_exponential_and_never_shorter_than_retry_after(
    draw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The jitter's draw pinned to either end of its range.
    monkeypatch.setattr(
        tenacity.wait.random, "uniform", lambda low, high: low if draw == "lowest" else high
    )
    upstream = Upstream(
        [NotSent("busy", retry_after=2.0), NotSent("busy"), AnswerLost("reset"), "done"]
    )
    assert await upstream.policy(attempts=4, backoff=1.0).call(upstream.send, what="r") == "done"
    # Up to 1, 2, 4 s; the first raised to the 2 s the upstream asked for.
    assert upstream.sleeps == ([2.0, 0.0, 0.0] if draw == "lowest" else [2.0, 2.0, 4.0])


async def test_a_retry_after_beyond_the_longest_wait_is_passed_on_at_once() -> None:
    upstream = Upstream([NotSent("busy", retry_after=30.0), "done"])
    with pytest.raises(Unavailable) as caught:
        await upstream.policy(backoff=1.0).call(upstream.send, what="read")
    assert upstream.sends == 1 and upstream.sleeps == []
    assert caught.value.retry_after == 30.0


async def test_a_write_not_sent_is_sent_again_without_a_look_up() -> None:
    upstream = Upstream([NotSent("refused"), "applied"])
    result = await upstream.policy().write(
        upstream.send, what="write", reference="r", look_up=upstream.look_up
    )
    assert (result, upstream.sends, upstream.look_ups) == ("applied", 2, 0)


async def test_a_lost_write_that_was_applied_is_found_not_resent() -> None:
    upstream = Upstream([AnswerLost("reset")], found="applied-before")
    result = await upstream.policy().write(
        upstream.send, what="write", reference="r", look_up=upstream.look_up
    )
    assert (result, upstream.sends, upstream.look_ups) == ("applied-before", 1, 1)


async def test_a_lost_write_proven_absent_is_sent_once_more() -> None:
    upstream = Upstream([AnswerLost("reset"), "applied"])
    result = await upstream.policy().write(
        upstream.send, what="write", reference="r", look_up=upstream.look_up
    )
    assert (result, upstream.sends, upstream.look_ups) == ("applied", 2, 1)


async def test_a_write_lost_twice_is_an_unknown_outcome_after_two_look_ups() -> None:
    upstream = Upstream([AnswerLost("reset"), AnswerLost("reset"), "never"])
    with pytest.raises(Unknown) as caught:
        await upstream.policy().write(
            upstream.send, what="write", reference="r-9", look_up=upstream.look_up
        )
    assert (upstream.sends, upstream.look_ups) == (2, 2)
    assert caught.value.reference == "r-9"


async def test_absence_that_proves_nothing_is_never_resent() -> None:
    upstream = Upstream([AnswerLost("reset"), "never"])
    with pytest.raises(Unknown):
        await upstream.policy().write(
            upstream.send,
            what="write",
            reference="r",
            look_up=upstream.look_up,
            absence_is_proof=False,
        )
    assert (upstream.sends, upstream.look_ups) == (1, 1)


async def test_a_failed_look_up_is_an_unknown_outcome() -> None:
    upstream = Upstream([AnswerLost("reset"), "never"])

    async def down() -> str | None:
        raise Unavailable("look-up down")

    with pytest.raises(Unknown) as caught:
        await upstream.policy().write(upstream.send, what="write", reference="r", look_up=down)
    assert upstream.sends == 1 and caught.value.reference == "r"


async def test_without_a_look_up_a_lost_write_is_at_once_an_unknown_outcome() -> None:
    # Vii's rule: the caller undoes the reference and tries again under a new one.
    upstream = Upstream([NotSent("refused"), AnswerLost("reset"), "never"])
    with pytest.raises(Unknown) as caught:
        await upstream.policy().write(upstream.send, what="redeem", reference="tran-1")
    assert upstream.sends == 2 and caught.value.reference == "tran-1"


async def test_looking_first_finds_a_write_made_by_an_earlier_attempt() -> None:
    upstream = Upstream(["never"], found="applied-before")
    result = await upstream.policy().write(
        upstream.send, what="write", reference="r", look_up=upstream.look_up, look_up_first=True
    )
    assert (result, upstream.sends, upstream.look_ups) == ("applied-before", 0, 1)
