"""`python -m bench.inprocess --stream`: the gateway's CPU per relayed stream frame, without
sockets (issue 15; a tool, not a test).

The whole default path runs, as for `bench.inprocess` (FastServer, the app with client
keys, metrics, the info access log and stream normalization on, FastTransport), with both
sockets replaced by fakes. Each of `--streams` client connections asks for a streamed chat
completion (no `stream_options`, so the gateway asks Azure for usage itself and hides the
usage frame, as it does for most clients); the fake upstream answers with a recorded-shape
Azure stream: the prompt-filter frame, the role frame, `--frames` content frames each with
its `content_filter_results`, an asynchronous filter annotation frame after every
`--annotate-every` content frames, the finish frame, the usage frame and `[DONE]`, each
frame in its own HTTP chunk, as Azure sends them. With `--obfuscation` every chunk with a
choice carries Azure's gpt-5-family padding (`"obfuscation":"..."` after `model`, another
value each frame, as the emulator sends it). Each read delivers `--per-read` frames;
the next read comes once the gateway has relayed (or dropped) the last: when it waits for
one (pulled) or right after the read was handed to its sink (pushed, `gateway/relay.py`)
(lock step per stream, every stream at once), so `--per-read 1` is "one frame per read"
and a larger value "several frames per read". Each client runs `--rounds` streams in a row.

Per frame = instructions (or CPU time) of the whole run divided by the upstream frames
relayed. That includes a per-stream fixed part (the request, the head, the log line);
`--count` separates the two: it runs the loop under callgrind twice, with `--frames` and
with `--frames` + `--extra-frames`, and prints the difference per added frame (the
marginal cost of one more content frame) beside the plain average, for one frame per
read and for several:

    PYTHONHASHSEED=0 python -m bench.inprocess --stream --count
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import orjson

from azure_openai_proxy.http.server import FastServer
from azure_openai_proxy.upstream.fast.connection import BodySink, _Connection
from azure_openai_proxy.upstream.fast.pool import _HostPool
from azure_openai_proxy.upstream.fast.wire import _Target
from bench import inprocess
from bench.systems import CHAT_BODY, CLIENT_KEY

_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_HEAD = {
    "created": 1727000000,
    "id": "chatcmpl-AzBench0001",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion.chunk",
    "system_fingerprint": "fp_5b26d85e12",
}
_WORDS = (" The", " parcel", " is", " late;", " please", " wait", " one", " more",
          " working", " day.")
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
    b"apim-request-id: 5a1b2c3d-bench\r\nx-ms-region: East US\r\n"
    b"x-ratelimit-remaining-requests: 99\r\nx-ratelimit-remaining-tokens: 99000\r\n\r\n"
)


def _frame(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _padded(obj: dict[str, object], n: int) -> dict[str, object]:
    """`obj` with a gpt-5 chunk's `obfuscation` member after `model`: 1-16 characters
    that pad the delta towards a multiple of 16 bytes (as `emulator/frames.py`), their
    value another each frame."""
    choices: Any = obj["choices"]
    shown = orjson.dumps(choices[0]["delta"])
    padding = hashlib.sha256(b"%d" % n).hexdigest()[:16 - len(shown) % 16]
    out: dict[str, object] = {}
    for key, value in obj.items():
        out[key] = value
        if key == "model":
            out["obfuscation"] = padding
    return out


def _choice(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {"content_filter_results": {} if finish or "role" in delta else _FILTERS,
            "delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}


def azure_frames(content: int, annotate_every: int = 10, obfuscation: bool = False) -> list[bytes]:
    """One recorded-shape Azure chat stream (section 4 of azure-openai-wire.md), a frame
    per item: prompt filter, role, `content` content frames with an async-filter
    annotation after every `annotate_every`, finish, usage, [DONE]; with `obfuscation`
    the chunks with a choice padded as a gpt-5 model's."""
    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        obj = {"choices": [_choice(delta, finish)], **_HEAD}
        return _frame(_padded(obj, len(out)) if obfuscation else obj)

    out = [_frame({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                   "prompt_filter_results": [{"prompt_index": 0,
                                              "content_filter_results": _FILTERS}]})]
    out.append(chunk({"content": "", "role": "assistant"}))
    offset = 0
    for i in range(content):
        out.append(chunk({"content": _WORDS[i % len(_WORDS)]}))
        if annotate_every and (i + 1) % annotate_every == 0:
            out.append(_frame({"choices": [{
                "content_filter_offsets": {"check_offset": offset, "start_offset": offset,
                                           "end_offset": offset + 40},
                "content_filter_results": _FILTERS, "finish_reason": None, "index": 0}],
                "created": 0, "id": "", "model": "", "object": ""}))
            offset += 40
    out.append(chunk({}, "stop"))
    out.append(_frame({"choices": [], **_HEAD, "usage": {
        "completion_tokens": content, "prompt_tokens": 57, "total_tokens": content + 57}}))
    out.append(b"data: [DONE]\n\n")
    return out


def _reads(frames: list[bytes], per_read: int) -> list[bytes]:
    """The upstream's reads: `per_read` frames each, every frame its own HTTP chunk; the
    head with the first read, the chunked terminator with the last (as Azure ends)."""
    chunks = [b"%x\r\n%b\r\n" % (len(f), f) for f in frames]
    reads = [b"".join(chunks[i:i + per_read]) for i in range(0, len(chunks), per_read)]
    reads[0] = _STREAM_HEAD + reads[0]
    reads[-1] += b"0\r\n\r\n"
    return reads


def _request(key: str = CLIENT_KEY) -> bytes:
    body = json.dumps({**CHAT_BODY, "stream": True}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


class _PacedConnection(_Connection):
    """An upstream connection whose fake Azure sends its next read when the gateway waits
    for one (pulled), or once the last was handed to the relay's sink (pushed): every
    read is relayed (or dropped) before the next arrives."""

    reads: list[bytes]
    pending: list[bytes]
    due = False

    def answer(self, _request: bytes) -> None:
        self.pending = self.reads[::-1]
        self._send_soon()

    def _send_soon(self) -> None:
        if not self.due and self.pending:
            self.due = True
            self.loop.call_soon(self._send)

    def _send(self) -> None:
        self.due = False
        self.data_received(self.pending.pop())
        if self.sink is not None and not self.reading_paused:
            self._send_soon()

    def push_to(self, sink: BodySink, timeout: float) -> None:
        super().push_to(sink, timeout)
        if self.sink is not None:
            self._send_soon()

    def wait(self, timeout: float) -> asyncio.Future[None]:
        waiter = super().wait(timeout)
        if self.started and not self.body:
            self._send_soon()
        return waiter


class _StreamTransport(inprocess._LoopbackTransport):
    reads: list[bytes]

    async def _connect(self, pool: _HostPool, target: _Target) -> _Connection:
        conn = _PacedConnection(pool)
        conn.reads = self.reads
        conn.connection_made(inprocess.FakeSocket(conn.answer))  # type: ignore[arg-type]
        pool.every.add(conn)
        return conn


async def measure_stream(streams: int, rounds: int, frames: list[bytes], per_read: int,
                         callgrind: bool, database: str | None = None,
                         key: str = CLIENT_KEY) -> tuple[float, int]:
    """CPU seconds for `streams` clients each relaying `rounds` streams of `frames`, and
    how many client writes carried them. With `database` and a virtual `key` in it: the
    governed path (limits, the ledger)."""
    from azure_openai_proxy.observability import accesslog

    accesslog.access_logger.setLevel("INFO")
    _StreamTransport.reads = _reads(frames, per_read)
    app = inprocess._gateway_app(database, transport_class=_StreamTransport)
    await app.startup()
    server = FastServer(app)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    left = streams
    writes = 0
    bad: list[bytes] = []

    request = _request(key)

    def connect() -> None:
        conn = server.connection()
        remaining = rounds
        seen = b""

        def on_write(data: bytes) -> None:
            nonlocal writes, remaining, left, seen
            writes += 1
            if not seen:
                seen = data[:64]
                if not data.startswith(b"HTTP/1.1 200 OK\r\n"):
                    bad.append(data[:200])
            if data.endswith(b"0\r\n\r\n") and b"data: [DONE]" in data:
                seen = b""
                remaining -= 1
                if remaining:
                    loop.call_soon(conn.data_received, request)
                else:
                    left -= 1
                    if not left and not done.done():
                        done.set_result(None)

        conn.connection_made(inprocess.FakeSocket(on_write))  # type: ignore[arg-type]
        loop.call_soon(conn.data_received, request)

    gc.collect()
    gc.disable()
    if callgrind:
        inprocess.instrument(True)
    started = time.process_time()
    for _ in range(streams):
        connect()
    await done
    spent = time.process_time() - started
    if database is not None:
        await inprocess._flush_ledger(app)  # the writer's work for these streams too
    if callgrind:
        inprocess.instrument(False)
    gc.enable()
    server.close()
    await app.cleanup()
    if bad:
        raise SystemExit(f"{len(bad)} streams were not answered 200 OK: {bad[0]!r}")
    return spent, writes


def _run_once(args: argparse.Namespace) -> None:
    from azure_openai_proxy.runtime.runner import run_loop

    frames = azure_frames(args.frames, args.annotate_every, args.obfuscation)
    result: list[Any] = []

    async def run(database: str | None = None, key: str = CLIENT_KEY) -> None:
        result.extend(await measure_stream(args.streams, args.rounds, frames, args.per_read,
                                           args.callgrind, database, key))

    if args.governed:
        with tempfile.TemporaryDirectory() as directory:
            key = inprocess._governed_key(directory)
            run_loop(run(f"sqlite:///{directory}/gateway.db", key))
    else:
        run_loop(run())
    spent, writes = result
    relayed = args.streams * args.rounds * len(frames)
    print(f"gateway streams: {spent / relayed * 1e6:.2f} µs CPU per relayed frame "
          f"({args.streams} streams x {args.rounds} rounds x {len(frames)} frames, "
          f"{args.per_read} per read, {writes} client writes)")


def _callgrind_total(args: argparse.Namespace, frames: int, per_read: int) -> int:
    """Instructions of the measured loop, one callgrind run."""
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, "-m", "bench.inprocess", "--stream", "--callgrind",
            "--streams", str(args.streams), "--rounds", str(args.rounds),
            "--frames", str(frames), "--per-read", str(per_read),
            "--annotate-every", str(args.annotate_every),
            *(["--obfuscation"] if args.obfuscation else []),
            *(["--governed"] if args.governed else []),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, capture_output=True, env=env)
        with open(out, "rb") as file:
            for line in file:
                if line.startswith(b"totals:"):  # its "summary:" line reads 0 here
                    return int(line.split()[1])
    raise SystemExit("callgrind wrote no totals")


def _count(args: argparse.Namespace) -> None:
    small = len(azure_frames(args.frames, args.annotate_every))
    large = len(azure_frames(args.frames + args.extra_frames, args.annotate_every))
    streams = args.streams * args.rounds
    print(f"instructions ({args.streams} streams x {args.rounds} rounds; {small} and "
          f"{large} upstream frames a stream, callgrind, PYTHONHASHSEED=0):")
    for per_read in args.count_per_read:
        base = _callgrind_total(args, args.frames, per_read)
        more = _callgrind_total(args, args.frames + args.extra_frames, per_read)
        marginal = (more - base) / (streams * (large - small))
        fixed = (base - marginal * streams * small) / streams
        print(f"  {per_read} frame(s) per read: {base / (streams * small):,.0f} per frame "
              f"averaged over {small}-frame streams; {marginal:,.0f} per added frame, "
              f"{fixed:,.0f} fixed per stream")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess --stream")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--streams", type=int, default=100, help="concurrent client streams")
    parser.add_argument("--rounds", type=int, default=2, help="streams per client, in a row")
    parser.add_argument("--frames", type=int, default=50, help="content frames per stream")
    parser.add_argument("--annotate-every", type=int, default=10,
                        help="an async-filter annotation frame after this many (0: none)")
    parser.add_argument("--obfuscation", action="store_true",
                        help="chunks padded as gpt-5's: an obfuscation member after model")
    parser.add_argument("--per-read", type=int, default=1, help="upstream frames per read")
    parser.add_argument("--callgrind", action="store_true",
                        help="switch callgrind's instrumentation on for the loop only")
    parser.add_argument("--governed", action="store_true",
                        help="a virtual key with RPM/TPM limits among 100, the ledger on")
    parser.add_argument("--count", action="store_true",
                        help="run callgrind itself: instructions per frame, marginal and fixed")
    parser.add_argument("--extra-frames", type=int, default=100,
                        help="--count: content frames added for the marginal cost")
    parser.add_argument("--count-per-read", type=int, nargs="+", default=[1, 4],
                        help="--count: the frames-per-read values to measure")
    args = parser.parse_args(argv)
    if args.count:
        _count(args)
    else:
        _run_once(args)
