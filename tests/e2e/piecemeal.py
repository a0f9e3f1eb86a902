"""An HTTP CONNECT proxy on loopback writing its answer's head in pieces
(test_proxyhead_connect.py's), and an https:// Azure asked through it: a module light
enough for a child process to import at once (no SDK, no emulator)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.transport import UpstreamRequest

# Long enough for the gateway to read each piece alone, even on a loaded machine.
_GAP = 0.2
ESTABLISHED = (b"HTTP/1.1 200 Connection established\r\n", b"Proxy-Agent: piecemeal/1\r\n",
               b"\r\n")


class PiecemealProxy:
    """An HTTP CONNECT proxy on loopback that writes its answer's head in `pieces`, one
    TCP write each, `_GAP` apart; a 2xx is then a tunnel to the host CONNECT named."""

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = pieces
        self.heads: list[bytes] = []
        self.port = 0
        self.serving: set[asyncio.Task[None]] = set()  # its connections' handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> PiecemealProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def close(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.serving.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            host, _, port = head.split(b" ")[1].decode().rpartition(":")
            # A name's trailing dot (DNS's root) is for DNS, not this machine's hosts file.
            far_reader, far_writer = await asyncio.open_connection(host.rstrip("."), int(port))
            for piece in self.pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(_GAP)
            if self.pieces[0].split(b" ")[1].startswith(b"2"):
                await asyncio.gather(_pipe(reader, far_writer), _pipe(far_reader, writer))
            far_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.serving.discard(task)
            writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


@contextlib.asynccontextmanager
async def piecemeal_proxy(*pieces: bytes) -> AsyncIterator[PiecemealProxy]:
    proxy = await PiecemealProxy(pieces).start()
    try:
        yield proxy
    finally:
        proxy.close()


async def tls_through(cert: str, key: str) -> None:
    """(In a child whose SSL_CERT_FILE is `cert`.) An https:// Azure on loopback with
    `cert`, asked through a proxy writing its head in pieces; prints what it saw."""
    names: list[str | None] = []
    serving: set[asyncio.Task[None]] = set()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _, name, __: names.append(name)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        serving.add(task)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()

    azure = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = azure.sockets[0].getsockname()[1]
    async with piecemeal_proxy(*ESTABLISHED) as proxy:
        transport = FastTransport(UpstreamSettings(
            connect_timeout=5, http_proxy=f"http://127.0.0.1:{proxy.port}"))
        try:
            for host in ("localhost", "localhost."):
                response = await transport.send(
                    UpstreamRequest("GET", f"https://{host}:{port}/openai/x", {}))
                print(response.status, (await response.read(10)).decode())
                response.close()
        finally:
            await transport.close()
        # The client closed its tunnels (TLS's close_notify first): the proxy's and
        # Azure's handlers end, not cancelled by the loop's end (3.11 logs that).
        if serving | proxy.serving:
            await asyncio.wait(serving | proxy.serving, timeout=10)
    print("SNI", names, "CONNECT", [head.split(b" ")[1].decode() for head in proxy.heads])
