"""Instructions per relayed frame of the HTTP/2 upstream's pushed relay, without sockets
or TLS (issue 15; a tool, not a test): `bench.paced`'s stream (Azure's frame sequence,
an annotation after every 10th content frame, each step one DATA frame as nginx sends
it) for `--streams` streams of one `_H2Connection`, fed straight into `data_received`
(`--per-read` DATA frames of as many streams a read), relayed by the real `relay()`
(stream normalization on, usage hidden) into recording client channels.

    PYTHONHASHSEED=0 python -m bench.h2frame --count     # callgrind twice, the difference

`--count` runs the loop under callgrind with 10 and 110 content frames a stream and
prints the difference per added content frame (its share of the annotation frames
included). What it leaves out: TLS (`bench.realcount --tls` counts it, real sockets),
the request path and the client socket's write.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from typing import Any

import uvloop
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.gateway.relay import relay
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.request import FastRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.upstream.h2.connection import _H2Connection
from azure_openai_proxy.upstream.h2.stream import H2Response
from bench.callgrind import module_total
from bench.paced import CONTENT_MARK, PacedStream, frames

_POLICY = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
_PROMPT = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
# `:status: 200`, `content-type: text/event-stream` (a literal with an indexed name)
_HEAD = b"\x88\x5f\x11text/event-stream"


def _frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | kind, flags, sid) + payload


class _Wire:
    """The upstream connection's transport: writes dropped."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class _Client:
    """The client's connection as `FastStream` sees it: its bytes and content tokens
    (`bench.paced`'s mark) counted, never paused."""

    def __init__(self) -> None:
        self.transport: Any = self
        self.loop = asyncio.get_running_loop()
        self.closed = self.gone = self.write_paused = self.closing = False
        self.written = self.tokens = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.tokens += data.count(CONTENT_MARK)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> Any:
        return None

    def date(self) -> str:
        return "Sat, 05 Dec 2026 08:00:00 GMT"

    async def drain(self) -> None: ...


async def relay_streams(content: int, streams: int, per_read: int,
                        annotate_every: int = 10) -> tuple[int, int]:
    """Relay `streams` paced streams of `content` content frames; the bytes written and
    the content tokens among them."""
    loop = asyncio.get_running_loop()
    conn = _H2Connection(loop, "azure.test", 600.0)
    conn.connection_made(_Wire())  # type: ignore[arg-type]
    conn.data_received(_frame(4, 0, 0))  # the server's SETTINGS
    head, steps, tail = frames(PacedStream(content_frames=content,
                                           annotate_every=annotate_every))
    clients, tasks, sids = [], [], []
    for _ in range(streams):
        stream = conn.open_stream(b"\x82", True)
        conn.data_received(_frame(1, 4, stream.sid, _HEAD))
        client = _Client()
        request = FastRequest(client, "POST", "/v1/chat/completions",  # type: ignore[arg-type]
                              CIMultiDictProxy(CIMultiDict()), True, True, None, None)
        tasks.append(loop.create_task(relay(
            request, "chat/completions", H2Response(stream), _POLICY, "gpt-4o", True,
            RequestRecord("bench", "POST"), body=RequestBody(_PROMPT))))
        clients.append(client)
        sids.append(stream.sid)
    for _ in range(5):  # the relays start and wait
        await asyncio.sleep(0)
    for n, piece in enumerate([head, *steps, tail]):
        flags = 1 if n == len(steps) + 1 else 0  # END_STREAM with the tail
        data = [_frame(0, flags, sid, piece) for sid in sids]
        for at in range(0, len(data), per_read):
            conn.data_received(b"".join(data[at:at + per_read]))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return (sum(client.written for client in clients),
            sum(client.tokens for client in clients))


def _callgrind_total(content: int, args: argparse.Namespace) -> int:
    return module_total("bench.h2frame", "--frames", str(content), "--streams",
                        str(args.streams), "--per-read", str(args.per_read),
                        "--annotate-every", str(args.annotate_every))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="content frames per stream")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--per-read", type=int, default=1, help="DATA frames a read")
    parser.add_argument("--annotate-every", type=int, default=10,
                        help="an annotation frame after every N-th content frame (0: none); "
                        "the difference to 0 is the annotation frames' share")
    parser.add_argument("--count", action="store_true",
                        help="callgrind at 10 and 110 content frames: per added frame")
    args = parser.parse_args(argv)
    if not args.count:
        written, tokens = uvloop.run(relay_streams(args.frames, args.streams, args.per_read,
                                                   args.annotate_every))
        print(f"{args.streams} streams relayed, {written:,} bytes and {tokens:,} content "
              "tokens to the clients")
        return 0
    low, high = (_callgrind_total(n, args) for n in (10, 110))
    print(f"per added content frame: {(high - low) / (100 * args.streams):,.0f} instructions "
          f"({args.streams} streams, {args.per_read} DATA frame(s) a read)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
