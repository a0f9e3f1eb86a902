"""`DirectSSLObject` (upstream/tlsread.py): the HTTP/2 upstream's TLS objects read each
record through the `_ssl` object's own C methods, not `ssl.py`'s Python wrappers, and
read exactly what `ssl.SSLObject` reads (the same bytes record by record, into a buffer
too, the same `pending()`, the same want-read and end-of-stream)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest
import uvloop

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Response, H2Transport
from azure_openai_proxy.upstream.tlsread import DirectSSLObject, direct_reads
from azure_openai_proxy.upstream.transport import UpstreamRequest
from tests.e2e.h2server import BIG, ScriptedH2Server
from tests.unit.test_fasttransport import _self_signed


def _pair(tmp_path: Path, direct: bool) -> tuple[ssl.SSLObject, ssl.SSLObject, Any, Any]:
    """A client and a server TLS object over memory BIOs, handshaken: (client, server,
    the client's incoming BIO, the server's outgoing one)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    if direct:
        direct_reads(client_context)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(6):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    return client, server, c_in, s_out


def _read_all(client: ssl.SSLObject, incoming: Any, wire: bytes) -> list[Any]:
    """What the client reads of `wire` as uvloop does: record by record while its BIO
    or the object holds bytes, some reads into a buffer; then a read past the end."""
    incoming.write(wire)
    seen: list[Any] = []
    buffer = bytearray(64)
    n = 0
    while incoming.pending > 0 or client.pending() > 0:
        seen.append(("pending", client.pending()))
        if n % 3 == 2:
            got = client.read(len(buffer), buffer)
            seen.append(("into", bytes(buffer[:got])))
        else:
            seen.append(("read", client.read(256 * 1024)))
        n += 1
    try:
        client.read(1024)
    except ssl.SSLWantReadError:
        seen.append("want read")
    return seen


@pytest.mark.parametrize("sizes", [[440] * 30, [1, 70, 5000, 16384, 17000, 3]])
def test_reads_record_by_record_as_ssl_objects_do(tmp_path: Path, sizes: list[int]) -> None:
    results = []
    for direct in (False, True):
        client, server, incoming, outgoing = _pair(tmp_path / str(direct), direct)
        assert (type(client) is DirectSSLObject) is direct
        for size in sizes:
            server.write(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        seen = _read_all(client, incoming, outgoing.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.unwrap()  # close_notify: the client's next read returns b""
        incoming.write(outgoing.read())
        seen.append(("end", client.read(1024)))
        results.append(seen)
    assert results[0] == results[1]
    assert results[1][-1] == ("end", b"")


def test_read_and_pending_are_the_c_methods(tmp_path: Path) -> None:
    client, _, _, _ = _pair(tmp_path, True)
    for name in ("read", "pending"):
        method = getattr(client, name)
        assert type(method).__name__ == "builtin_function_or_method", name
        assert getattr(method, "__self__", None) is client._sslobj  # type: ignore[attr-defined]
    plain, _, _, _ = _pair(tmp_path / "plain", False)
    assert type(plain.read).__name__ == "method"  # ssl.py's wrapper: what was saved


def test_a_context_with_its_own_object_class_is_left_alone() -> None:
    class Mine(ssl.SSLObject):
        pass

    context = ssl.create_default_context()
    context.sslobject_class = Mine
    assert direct_reads(context).sslobject_class is Mine


def _run_over_tls(tmp_path: Path) -> tuple[bytes, object]:
    async def main() -> tuple[bytes, object]:
        cert, key = _self_signed(tmp_path)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)
        server_context.set_alpn_protocols(["h2"])
        script = ScriptedH2Server()
        base = await script.start(server_context)
        transport = H2Transport(UpstreamSettings(http2=True),
                                ssl_contexts=lambda: ssl.create_default_context(cafile=str(cert)))
        try:
            response = await transport.send(UpstreamRequest("GET", base + "/big", {}, None))
            assert isinstance(response, H2Response)
            stream = response._stream
            assert stream is not None and stream.conn.transport is not None
            tls = stream.conn.transport.get_extra_info("ssl_object")
            return await response.read(BIG), tls
        finally:
            await transport.close()
            await script.stop()

    return uvloop.run(main())


def test_an_answer_larger_than_the_windows_over_tls_on_uvloop(tmp_path: Path) -> None:
    body, tls = _run_over_tls(tmp_path)
    assert body == bytes(range(256)) * (BIG // 256)
    assert type(tls) is DirectSSLObject


async def test_an_answer_over_tls_on_asyncios_loop(tmp_path: Path) -> None:
    assert not isinstance(asyncio.get_running_loop(), uvloop.Loop)
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server_context.set_alpn_protocols(["h2"])
    script = ScriptedH2Server()
    base = await script.start(server_context)
    transport = H2Transport(UpstreamSettings(http2=True),
                            ssl_contexts=lambda: ssl.create_default_context(cafile=str(cert)))
    try:
        response = await transport.send(UpstreamRequest("GET", base + "/big", {}, None))
        assert await response.read(BIG) == bytes(range(256)) * (BIG // 256)
    finally:
        await transport.close()
        await script.stop()
