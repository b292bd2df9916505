"""The aiohttp-backed httpx transport against a real socket server that misbehaves on demand.

What is checked is what the clients rely on: the bytes httpx chose go out unchanged, answers come
back whole (also gzip-encoded and streamed), the pool keeps to its limit, and each failure lands
on the right side of the line between "never sent" and "answer lost".
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.clients.onsite import OnSiteClient
from app.clients.transport import AiohttpTransport

Behaviour = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _answer(status: int, body: bytes, *headers: str, reason: str = "OK") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class RawServer:
    """An HTTP/1.1 server on a real socket; `behaviour` decides what each request gets."""

    behaviour: Behaviour
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
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
                await self.behaviour(request, reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


async def ok(request: bytes, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_answer(200, b'{"ok": true}', "Content-Type: application/json", "X-Echo: 1"))
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


def client(timeout: float = 2.0, **transport_options: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=AiohttpTransport(**transport_options),  # type: ignore[arg-type]
        timeout=httpx.Timeout(timeout),
    )


async def test_sends_exactly_what_httpx_built_and_returns_the_answer(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(ok)
    async with client() as http:
        response = await http.post(
            server.url("/admin/api/graphql.json?x=a%2Fb"),
            content=b"<xml/>",
            headers={"Content-Type": "text/xml", "X-Shopify-Access-Token": "t"},
        )
    assert response.status_code == 200
    assert response.reason_phrase == "OK"
    assert response.json() == {"ok": True}
    assert response.headers["x-echo"] == "1"
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    # The query keeps its escapes; aiohttp adds no header of its own and repeats none.
    assert lines[0] == b"POST /admin/api/graphql.json?x=a%2Fb HTTP/1.1"
    names = [line.split(b":", 1)[0].lower() for line in lines[1:]]
    assert sorted(names) == sorted(
        [
            b"host",
            b"accept",
            b"accept-encoding",
            b"connection",
            b"user-agent",
            b"content-type",
            b"x-shopify-access-token",
            b"content-length",
        ]
    )
    assert b"Content-Type: text/xml" in lines
    assert any(line.startswith(b"User-Agent: python-httpx/") for line in lines)
    assert body == b"<xml/>"


async def test_gzip_answers_are_decoded_by_httpx(serve) -> None:  # type: ignore[no-untyped-def]
    payload = b'{"balance": "12.50"}' * 50

    async def gzipped(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(200, gzip.compress(payload), "Content-Encoding: gzip"))
        await writer.drain()

    server = await serve(gzipped)
    async with client() as http:
        response = await http.get(server.url())
    assert response.content == payload


async def test_a_large_body_streams_line_by_line(serve) -> None:  # type: ignore[no-untyped-def]
    lines = [f'{{"id": {n}, "balance": "1.00"}}'.encode() for n in range(60_000)]
    body = b"\n".join(lines) + b"\n"

    async def big(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, len(body), 64 * 1024):
            writer.write(body[start : start + 64 * 1024])
            await writer.drain()

    server = await serve(big)
    seen = 0
    async with client() as http, http.stream("GET", server.url()) as response:
        async for line in response.aiter_lines():
            if line:
                seen += 1
    assert seen == 60_000


async def test_sequential_requests_reuse_one_connection(serve) -> None:  # type: ignore[no-untyped-def]
    server = await serve(ok)
    async with client() as http:
        for _ in range(5):
            assert (await http.get(server.url())).status_code == 200
    assert server.connections == 1


async def test_the_pool_keeps_to_its_connection_limit(serve) -> None:  # type: ignore[no-untyped-def]
    async def slow(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await asyncio.sleep(0.05)
        await ok(request, reader, writer)

    server = await serve(slow)
    async with client(limits=httpx.Limits(max_connections=2)) as http:
        answers = await asyncio.gather(*(http.get(server.url()) for _ in range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert server.most_open <= 2


async def test_a_refused_connection_is_not_sent() -> None:
    # A port that was just free: nobody listens on it.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_waiting_too_long_for_a_pooled_connection_is_not_sent(serve) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()

    async def held(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await release.wait()
        await ok(request, reader, writer)

    server = await serve(held)
    async with client(timeout=0.3, limits=httpx.Limits(max_connections=1)) as http:
        first = asyncio.create_task(http.get(server.url("/first"), timeout=5.0))
        await asyncio.sleep(0.05)
        with pytest.raises((httpx.ConnectTimeout, httpx.PoolTimeout)):
            await http.get(server.url("/second"))
        release.set()
        assert (await first).status_code == 200
    assert [r.split(b" ")[1] for r in server.requests] == [b"/first"]


async def test_a_server_that_hangs_up_after_reading_is_a_lost_answer(serve) -> None:  # type: ignore[no-untyped-def]
    async def hang_up(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await serve(hang_up)
    async with client() as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.post(server.url(), content=b"debit 10.00")
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)
    assert len(server.requests) == 1  # it did arrive: resending could apply it twice


async def test_silence_after_the_request_is_a_read_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(_: bytes, reader: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes

    server = await serve(silent)
    async with client(timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(server.url(), content=b"x")
    assert len(server.requests) == 1


async def test_garbage_instead_of_http_is_a_protocol_error(serve) -> None:  # type: ignore[no-untyped-def]
    async def garbage(_: bytes, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"<html>not http at all</html>\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await serve(garbage)
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url())


async def test_a_body_cut_short_is_a_lost_answer_and_the_next_call_works(serve) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    async def cut(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial":')
            await writer.drain()
            writer.close()
        else:
            await ok(request, reader, writer)

    server = await serve(cut)
    async with client() as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.get(server.url())
        assert (await http.get(server.url())).json() == {"ok": True}


async def test_a_stream_closed_half_read_does_not_spoil_the_connection_pool(serve) -> None:  # type: ignore[no-untyped-def]
    body = b"x" * 300_000

    async def big_or_small(
        request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if b" /big " in request:
            writer.write(_answer(200, body))
            await writer.drain()
        else:
            await ok(request, reader, writer)

    server = await serve(big_or_small)
    async with client() as http:
        async with http.stream("GET", server.url("/big")) as response:
            async for _ in response.aiter_raw():
                break
        assert (await http.get(server.url("/small"))).json() == {"ok": True}


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


async def test_tls_is_verified_unless_switched_off(tmp_path: Path) -> None:
    server = RawServer(ok)
    await server.start(tls=_self_signed(tmp_path))
    try:
        async with client() as strict:
            with pytest.raises(httpx.ConnectError):
                await strict.get(server.url(scheme="https"))
        async with client(verify=False) as lax:
            assert (await lax.get(server.url(scheme="https"))).status_code == 200
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


async def test_a_deadline_mid_answer_frees_the_connection_for_the_next_call(serve) -> None:  # type: ignore[no-untyped-def]
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
    async with client(timeout=1.0, limits=httpx.Limits(max_connections=1)) as http:
        for _ in range(3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await http.get(server.url("/stall"))
        assert (await http.get(server.url("/fine"))).json() == {"ok": True}


async def test_proxies_from_the_environment_are_used_and_no_proxy_is_honoured(
    serve,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = await serve(ok)
    target = await serve(ok)
    for name in ("http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    async with client() as http:
        assert (await http.get("http://shop.example.test/x")).status_code == 200
    assert proxy.requests[0].startswith(b"GET http://shop.example.test/x HTTP/1.1")

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with client() as http:
        assert (await http.get(target.url("/direct"))).status_code == 200
    assert target.requests[0].startswith(b"GET /direct HTTP/1.1")
    assert len(proxy.requests) == 1
