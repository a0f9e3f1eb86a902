"""Instructions per added stream of the HTTP/2 upstream's set-up and HPACK, without
sockets or TLS (issue 15; a tool, not a test): `--streams` streamed chat requests sent
through the real `H2Transport.send` on one `_H2Connection` (its pool filled by hand, no
dial), answered by an in-memory server with nginx 1.22's header block as the paced
upstream sent it before it sent Azure's ids (`--unique-ids` is nearer to what it sends
now, and to Azure) (server, date and content-type as literals with incremental indexing,
Huffman coded; `apim-request-id` and `x-ms-region` without indexing), the request body's
WINDOW_UPDATE, and `bench.paced`'s stream with `--frames` content frames, each DATA frame
its own read; relayed by the real `relay()` (stream normalization on, usage hidden) into
counting clients, then closed as the pipeline closes them.

    PYTHONHASHSEED=0 python -m bench.h2setup --count              # callgrind at 100 and 300
    PYTHONHASHSEED=0 python -m bench.h2setup --count --unique-ids  # Azure's ids, below
    PYTHONHASHSEED=0 python -m bench.h2setup --count --azure-head  # Azure's whole head

`--count` runs the loop under callgrind with 100 and 300 streams and prints the
difference per added stream. `--unique-ids` adds what real Azure sends and nginx does
not: an `x-request-id` (a UUID) and an `x-ratelimit-remaining-tokens` of each answer's
own (Huffman coded, literals without indexing), so no two answers' header blocks are the
same bytes.
What it leaves out: TLS, the client's side (`bench.inprocess --stream`: HTTP/1.1) and
real sockets (`bench.realcount --tls`)."""

from __future__ import annotations

import argparse
import asyncio
import struct
import tempfile
import uuid
from pathlib import Path
from typing import Any

import hpack
import uvloop
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import UpstreamSettings
from azure_openai_proxy.upstream.h2 import H2Transport
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.frames import parse_origin
from azure_openai_proxy.upstream.transport import UpstreamRequest
from bench.callgrind import module_total
from bench.h2frame import _Client, _frame
from bench.paced import PacedStream, frames

_URL = "https://azure.test/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
_HEADERS = {"api-key": "0123456789abcdef0123456789abcdef", "content-type": "application/json",
            "user-agent": "bench"}
_PROMPT = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
           "messages": [{"role": "user", "content": "Hi"}]}
_SPREAD = 0x9E3779B97F4A7C15F39CC0605CEDC835  # ids that look random, the same each run
_POLICY = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
# nginx 1.22's answer head, as the paced upstream sends it (captured over h2c): :status
# 200, then server, date, content-type as literals with incremental indexing, then
# apim-request-id and x-ms-region without indexing; all Huffman coded.
_NGINX_BLOCK = bytes.fromhex(
    "887689aa6355e580ae212e1f6196d07abe9403aa5f29141004e28205c0bb719754c5a37f5f8c497ca5"
    "82f72d495909b0a3a7008b1d66a56b0bdad2a12b1a4f8a6c618c446645ab190b270088f2b5285ac2cc"
    "63d586c034254e1bbf")
_NGINX_FIRST_FOUR = 50  # its bytes up to `apim-request-id`: status, server, date, type


class _Server:
    """The connection's transport and the server behind it: a request's HEADERS are
    answered at the loop's next turn (the head, the body's WINDOW_UPDATE and the first
    DATA frame in one read, as nginx writes them); `blocks`, one a stream, or nginx's."""

    def __init__(self, first: bytes, blocks: list[bytes]) -> None:
        self.conn: _H2Connection | None = None
        self.first = first
        self.blocks = blocks
        self.loop = asyncio.get_running_loop()
        self.sids: list[int] = []

    def write(self, data: bytes) -> None:
        if data[3] == 1:  # a request's HEADERS (the preface and acks start otherwise)
            sid = struct.unpack_from(">I", data, 5)[0] & 0x7FFFFFFF
            self.loop.call_soon(self.answer, sid, len(self.sids))
            self.sids.append(sid)

    def answer(self, sid: int, nth: int) -> None:
        block = self.blocks[nth] if self.blocks else _NGINX_BLOCK
        assert self.conn is not None
        self.conn.data_received(_frame(1, 4, sid, block)
                                + _frame(8, 0, sid, struct.pack(">I", 200))
                                + _frame(0, 0, sid, self.first))

    def close(self) -> None: ...
    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def unique_blocks(count: int) -> list[bytes]:
    """nginx's block and an `x-request-id` and `x-ratelimit-remaining-tokens` of each
    answer's own, Huffman coded, without indexing (made before the count: hpack's encoder
    is not the gateway's cost)."""
    blocks = []
    for n in range(count):
        extra = hpack.Encoder().encode([("x-request-id", str(uuid.UUID(int=(n * _SPREAD + 1) % (1 << 128)))),
                                        ("x-ratelimit-remaining-tokens", str(99000 - n))],
                                       huffman=True)
        blocks.append(_without_indexing(_NGINX_BLOCK + extra))
    return blocks


def azure_blocks(count: int) -> list[bytes]:
    """The head `bench.paced` sends since session 29 (and Azure, /work/shared/
    azure-openai-wire.md §4): nginx's `:status`, `server`, `date` and `content-type`,
    then `apim-request-id` and `x-request-id` (UUIDs of each answer's own), `x-ms-region`
    and `x-ratelimit-remaining-requests`/`-tokens` (counts of each answer's own), Huffman
    coded, without indexing, as nginx's `add_header` fields go."""
    blocks = []
    for n in range(count):
        ids = [str(uuid.UUID(int=(n * _SPREAD + k) % (1 << 128))) for k in (1, 2)]
        extra = hpack.Encoder().encode([
            ("apim-request-id", ids[0]), ("x-request-id", ids[1]), ("x-ms-region", "East US"),
            ("x-ratelimit-remaining-requests", str(9990 - n % 1000)),
            ("x-ratelimit-remaining-tokens", str(1990000 - n * 17))], huffman=True)
        blocks.append(_without_indexing(_NGINX_BLOCK[:_NGINX_FIRST_FOUR] + extra))
    return blocks


def _without_indexing(block: bytes) -> bytes:
    """`block` as built: hpack's Encoder indexes new fields (0x40 with a literal name);
    the ids must not be (they would fill the table), so its fields after nginx's part are
    rewritten as literals without indexing (0x00, the same length)."""
    prefix = _NGINX_FIRST_FOUR if len(block) < len(_NGINX_BLOCK) or not block.startswith(
        _NGINX_BLOCK) else len(_NGINX_BLOCK)
    head, tail = block[:prefix], bytearray(block[prefix:])
    at = 0
    while at < len(tail):  # each field: 0x40, the name's string, the value's string
        tail[at] = 0x00
        at += 1
        for _ in range(2):
            at += 1 + (tail[at] & 0x7F)  # lengths under 127: one byte
    return head + bytes(tail)


async def relay_streams(streams: int, content: int, blocks: list[bytes]) -> int:
    """`streams` streams sent, answered and relayed at once; the content tokens the
    clients got (a check that every frame went through)."""
    loop = asyncio.get_running_loop()
    head, steps, tail = frames(PacedStream(content_frames=content))
    transport = H2Transport(UpstreamSettings(http2=True))
    origin = parse_origin(_URL)
    pool = transport._pool(origin)
    server = _Server(head, blocks)
    conn = server.conn = _H2Connection(loop, origin.host, 600.0)
    conn.connection_made(server)  # type: ignore[arg-type]
    conn.data_received(_frame(4, 0, 0, struct.pack(">HI", 3, 10_000)))  # its SETTINGS
    conn.on_change = pool._changed
    pool.conns.append(conn)
    clients = [_Client() for _ in range(streams)]

    async def one(client: Any) -> None:
        response = await transport.send(UpstreamRequest(
            "POST", _URL, _HEADERS, b'{"model":"gpt-4o","stream":true,"messages":[]}'))
        request = FastRequest(client, "POST", "/v1/chat/completions",
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        try:
            await relay(request, "chat/completions", response, _POLICY, "gpt-4o", True,
                        RequestRecord("bench", "POST"), body=RequestBody(_PROMPT))
        finally:
            response.close()  # type: ignore[attr-defined]

    tasks = [loop.create_task(one(client)) for client in clients]
    for _ in range(6):  # sent, answered, relaying
        await asyncio.sleep(0)
    for n, piece in enumerate([*steps, tail]):
        flags = 1 if n == len(steps) else 0  # END_STREAM with the tail
        for sid in server.sids:
            conn.data_received(_frame(0, flags, sid, piece))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    await transport.close()
    return sum(client.tokens for client in clients)


def _callgrind_total(streams: int, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(tmp) / "blocks"
        made = azure_blocks if args.azure_head else unique_blocks if args.unique_ids else None
        if made is not None:
            ids.write_text("\n".join(block.hex() for block in made(streams)))
        return module_total("bench.h2setup", "--streams", str(streams), "--frames",
                            str(args.frames),
                            *(["--blocks", str(ids)] if made is not None else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--frames", type=int, default=1, help="content frames per stream")
    parser.add_argument("--unique-ids", action="store_true",
                        help="an x-request-id and a rate-limit count of its own per answer")
    parser.add_argument("--azure-head", action="store_true",
                        help="Azure's head as bench.paced sends it: two UUIDs, two counts")
    parser.add_argument("--blocks", default="", help=argparse.SUPPRESS)  # --count's
    parser.add_argument("--count", action="store_true",
                        help="callgrind at 100 and 300 streams: per added stream")
    args = parser.parse_args(argv)
    if not args.count:
        blocks = ([bytes.fromhex(line) for line in Path(args.blocks).read_text().split()]
                  if args.blocks else azure_blocks(args.streams) if args.azure_head
                  else unique_blocks(args.streams) if args.unique_ids else [])
        tokens = uvloop.run(relay_streams(args.streams, args.frames, blocks))
        if tokens != args.streams * args.frames:
            raise SystemExit(f"{tokens} content tokens relayed, not {args.streams * args.frames}")
        print(f"{args.streams} streams relayed, {tokens} content tokens")
        return 0
    low, high = (_callgrind_total(n, args) for n in (100, 300))
    print(f"per added stream: {(high - low) / 200:,.0f} instructions ({args.frames} content "
          f"frame(s){', Azure head' if args.azure_head else ', unique ids' if args.unique_ids else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
