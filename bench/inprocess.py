"""The gateway's own cost per relayed request, without sockets (a tool, not a test).

Run: python -m bench.inprocess [--requests 40000] [--clients 32] [--bare]
     python -m bench.inprocess --ledger | --governed [--thread]   (the usage ledger on: the
         gateway's default writer, the journal child; --thread: `ledger_writer: thread`)
     python -m bench.inprocess --stream [--count]   (per stream frame: bench/inprocess_stream.py)
     python -m bench.inprocess --bytecodes 40 [any of the above]   (bytecodes per request
         or stream, and the 40 functions that run the most: sys.settrace, slow)

The whole request path runs in one process, as in production (FastServer, the app with
client keys, metrics and the info access log, FastTransport), but both sockets are
fakes: a client writes the benchmark's chat request and, when its answer is written,
the next one; the upstream "connection" answers every request with the benchmark
upstream's Azure body on the next turn of the loop. What is left is the gateway's own
Python, so numbers are steady where a wrk run on a shared VM swings by 10-20%.

It prints CPU microseconds per request. For a figure that does not move at all, count
instructions with callgrind, collected for the request loop only:

    valgrind --tool=callgrind --instr-atstart=no python -m bench.inprocess --callgrind \\
        --requests 2000

(then Ir / 2000 is instructions per request; A/B two commits with it). `--bare` serves
the same requests with a one-handler proxy on the same two I/O layers: the floor the
gateway's features and pipeline sit on. The cyclic garbage collector is off during the
loop: the fakes answer in lock step, so far more requests are in flight at once than on
a real socket, and the collector would run there ~20x as often as it does under wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.app import GatewayApp, create_app
from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.http.interface import Answer, Application, HttpRequest, Reply
from azure_openai_proxy.http.server import FastServer
from azure_openai_proxy.observability.accesslog import AccessLog
from azure_openai_proxy.runtime.runner import run_loop
from azure_openai_proxy.upstream.fast import FastTransport
from azure_openai_proxy.upstream.fast.connection import _Connection
from azure_openai_proxy.upstream.fast.pool import _HostPool
from azure_openai_proxy.upstream.fast.wire import _Target
from azure_openai_proxy.upstream.transport import UpstreamRequest
from bench.systems import AZURE_ANSWER, CHAT_BODY, CLIENT_KEY

_UPSTREAM = "http://127.0.0.1:9"
_BODY = json.dumps(CHAT_BODY).encode()

def instrument(on: bool) -> None:
    """Switch callgrind's instrumentation of this process on or off (`--instr-atstart=no`
    runs count only what lies between)."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
                   check=False, capture_output=True)

def _request(key: str, body: bytes = _BODY) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Authorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n\r\n" + body
    )


def _varied(key: str) -> tuple[bytes, bytes]:
    """Two requests of the key whose token reservations differ (`max_tokens` 64 and 65),
    sent in turn: its TPM bucket's level differs from one answer to the next, as under
    real traffic, so the limiter never reuses the last answer's head lines."""
    other = json.dumps({**CHAT_BODY, "max_tokens": 65}).encode()
    return _request(key), _request(key, other)


REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(_BODY)).encode()
    + b"\r\n\r\n" + _BODY
)
_ANSWER = json.dumps(AZURE_ANSWER, separators=(",", ":")).encode()
ANSWER = (  # what the benchmark's nginx upstream sends, header for header
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 17:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: " + str(len(_ANSWER)).encode()
    + b"\r\nConnection: keep-alive\r\napim-request-id: 5a1b2c3d-bench\r\n"
    b"x-ms-region: East US\r\n\r\n" + _ANSWER
)


class FakeSocket:
    """The transport side of a connection: what is written goes to `on_write`."""

    def __init__(self, on_write: Callable[[bytes], None]) -> None:
        self._on_write = on_write
        self._closing = False

    def write(self, data: bytes) -> None:
        self._on_write(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self._on_write(b"".join(pieces))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _LoopbackTransport(FastTransport):
    """FastTransport whose connections are answered in memory, on the next loop turn."""

    async def _connect(self, pool: _HostPool, target: _Target) -> _Connection:
        conn = _Connection(pool)
        loop = pool.loop
        conn.connection_made(FakeSocket(lambda _: loop.call_soon(conn.data_received, ANSWER)))  # type: ignore[arg-type]
        pool.every.add(conn)
        return conn


def _gateway_app(database: str | None = None,
                 transport_class: type[FastTransport] | None = None,
                 writer: str | None = None) -> Application:
    """`writer`: `ledger_writer` (None: the gateway's default, the journal child)."""
    extra: dict[str, str] = {"database": database} if database else {}
    if database and writer:
        extra["ledger_writer"] = writer
    settings = load_settings({
        **extra,
        "client_keys": [CLIENT_KEY], "log_level": "info", "metrics": True,
        "deployment_config": [{
            "deployment_name": "gpt-4o", "model_name": "gpt-4o", "endpoint": _UPSTREAM + "/",
            "api_key": "bench-azure-key", "api_version": "2024-10-21",
        }],
    }, {})
    # The access lines are built and written as in production, to memory.
    transport = (transport_class or _LoopbackTransport)(settings.upstream)
    return create_app(settings, transport,
                      access_log=AccessLog(io.BytesIO()))


class _BareApp:
    """A one-handler proxy on the same engine and client: the floor."""

    def __init__(self) -> None:
        settings = load_settings({"endpoint": _UPSTREAM, "api_key": "k"}, {})
        self.upstream = _LoopbackTransport(settings.upstream)
        self.url = f"{_UPSTREAM}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"

    def __call__(self, request: HttpRequest) -> Awaitable[Reply]:
        return self.proxy(request)

    async def proxy(self, request: HttpRequest) -> Reply:
        body = await request.read(1 << 20)
        answer = await self.upstream.send(UpstreamRequest(
            "POST", self.url, {"api-key": "k", "content-type": "application/json"}, body))
        data = await answer.read(1 << 20)
        answer.close()
        return Answer(answer.status, {"content-type": "application/json"}, data)

    def refusal(self, status: int, message: str, code: str | None = None) -> Answer:
        return Answer(status, {}, message.encode())

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def cleanup(self) -> None:
        await self.upstream.close()


def _writer_cpu() -> float:
    """CPU seconds the ledger's writer thread has used so far (0 without one)."""
    for thread in threading.enumerate():
        if thread.name == "ledger-writer" and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


async def measure(requests: int, clients: int, bare: bool, callgrind: bool,
                  database: str | None = None, request: bytes | tuple[bytes, ...] = REQUEST,
                  split: list[float] | None = None, warm: int = 0,
                  writer: str | None = None) -> float:
    """CPU seconds per request over `requests` requests from `clients` connections;
    `split`, when given, receives the loop thread's and the writer thread's shares.
    `request`: several are sent in turn. `warm`: requests served first, on connections
    of their own, and the ledger written, before the count starts: what a process does
    once (the ledger writer preparing its statements, ~9 million instructions, most in
    the first batch that reaches each size) is then not spread over the count."""
    from azure_openai_proxy.observability import accesslog

    accesslog.access_logger.setLevel("INFO")  # the gateway's default level
    app: Application = _BareApp() if bare else _gateway_app(database, writer=writer)
    await app.startup()
    server = FastServer(app)
    loop = asyncio.get_running_loop()
    failed = 0

    # One turn for all the connections: the requests the gateway reads one after the
    # other are the next in turn, whichever connection sends them.
    sent = itertools.cycle((request,) if isinstance(request, bytes) else request)

    def start(count: int) -> asyncio.Future[None]:
        """`clients` connections sending until `count` answers have come."""
        done: asyncio.Future[None] = loop.create_future()
        answered = 0

        def connect() -> None:
            conn = server.connection()

            def on_write(data: bytes) -> None:
                nonlocal answered, failed
                answered += 1
                failed += not data.startswith(b"HTTP/1.1 200 OK\r\n")
                if answered >= count:
                    if not done.done():
                        done.set_result(None)
                else:
                    loop.call_soon(conn.data_received, next(sent))

            conn.connection_made(FakeSocket(on_write))  # type: ignore[arg-type]
            loop.call_soon(conn.data_received, next(sent))

        for _ in range(clients):
            connect()
        return done

    if warm:
        await start(warm)
        for _ in range(1000):  # turns of the loop: the warm phase's last requests answered
            await asyncio.sleep(0)
        await _flush_ledger(app)
    # The most records the ledger's queue held (`split`, not under callgrind): a writer
    # the saturated loop starves of the GIL falls behind (gateway/gilshare.py).
    ledger = app.ledger if isinstance(app, GatewayApp) else None
    most_waiting = 0

    async def sample(ledger: LedgerWriter) -> None:
        nonlocal most_waiting
        while True:
            most_waiting = max(most_waiting, ledger.waiting)
            await asyncio.sleep(0.01)

    sampler = (loop.create_task(sample(ledger))
               if ledger is not None and split is not None and not callgrind else None)
    gc.collect()
    gc.disable()
    if callgrind:
        instrument(True)
    started, loop_started, writer_started = (
        time.process_time(), time.thread_time(), _writer_cpu())
    await start(requests)
    spent = time.process_time() - started
    loop_spent = time.thread_time() - loop_started
    if sampler is not None:
        sampler.cancel()
    if split is not None:
        await _flush_ledger(app)  # the writer's work for these requests too
        split[:] = [loop_spent / requests, (_writer_cpu() - writer_started) / requests,
                    most_waiting]
    if callgrind:
        instrument(False)
    gc.enable()
    server.close()
    await app.cleanup()
    if failed:
        raise SystemExit(f"{failed} of {requests} answers were not 200 OK")
    return spent / requests


async def _flush_ledger(app: Application) -> None:
    """Wait for the app's ledger writer to have written what is queued (bounded by
    flush's timeout). The writer is the app's own: a scan of the heap for it
    (`gc.get_objects`) ran inside the measurement, ~16,000 instructions per request on a
    third thread that production never has."""
    ledger = app.ledger if isinstance(app, GatewayApp) else None
    if ledger is not None:
        await asyncio.to_thread(ledger.flush)


def _governed_key(directory: str, requests: int = 0) -> str:
    """A virtual key with RPM/TPM limits (high enough never to refuse) and 99 others
    beside it, in the database the gateway will open; its secret. `requests`: the run's
    (warm ones included), for limits twice what it takes (`--tight`): never refused at
    any speed, and never refilled to full between two requests (at 2 ms a request
    under callgrind, 0.4 of a request and ~56 tokens come back; each takes 1 and ~118),
    so every answer's head lines are made anew, as for a key used near its limits."""
    from pathlib import Path

    from azure_openai_proxy.governance.model import Limits
    from azure_openai_proxy.store.keys import KeyStore

    store = KeyStore.open(Path(directory) / "gateway.db")
    try:
        limits = (Limits(rpm=2 * requests, tpm=260 * requests) if requests
                  else Limits(rpm=10_000_000, tpm=10_000_000_000))
        for n in range(99):
            store.create_key(f"bench-{n}", limits=limits, now=time.time())
        return store.create_key("bench", limits=limits, now=time.time())[1]
    finally:
        store.close()


def _count_bytecodes(argv: list[str]) -> None:
    """`--bytecodes N`: the run's Python bytecodes (`sys.settrace` opcode events on the
    loop thread, between the points callgrind's instrumentation is switched at) per
    request, or per stream with `--stream`, and the N functions that run the most."""
    import collections
    import sys

    at = argv.index("--bytecodes")
    top = int(argv[at + 1])
    rest = [*argv[:at], *argv[at + 2:], "--callgrind"]
    known = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    known.add_argument("--requests", type=int, default=40000)
    known.add_argument("--streams", type=int, default=100)
    known.add_argument("--rounds", type=int, default=2)
    sizes = known.parse_known_args(rest)[0]
    units = sizes.streams * sizes.rounds if "--stream" in rest else sizes.requests
    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        code = frame.f_code
        name = "/".join(code.co_filename.rsplit("/", 2)[-2:]) + ":" + code.co_qualname
        if code.co_filename == "<string>" and "self" in frame.f_locals:  # a dataclass's
            name = f"{type(frame.f_locals['self']).__qualname__}.{code.co_name}"

        def opcodes(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[name] += 1
            return opcodes
        return opcodes

    def trace(on: bool) -> None:
        sys.settrace(tracer if on else None)

    global instrument
    instrument = trace
    from bench import inprocess  # the stream bench's: `__main__` is another module

    inprocess.instrument = trace
    main(rest)
    print(f"{sum(counts.values()) / units:,.0f} bytecodes per "
          f"{'stream' if '--stream' in rest else 'request'}; the most:")
    for name, count in counts.most_common(top):
        print(f"{count / units:8.1f}  {name}")


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if "--bytecodes" in argv:  # Python bytecodes per request or stream, by function
        _count_bytecodes(argv)
        return
    if "--stream" in argv:  # CPU per relayed stream frame (issue 15): its own options
        from bench.inprocess_stream import main as stream_main

        stream_main(argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bare", action="store_true", help="a one-handler proxy instead")
    parser.add_argument("--ledger", action="store_true",
                        help="the usage ledger on (a SQLite database in a temporary directory)")
    parser.add_argument("--governed", action="store_true",
                        help="the ledger on and requests with a virtual key (RPM/TPM limits) "
                             "among 100 in the temporary database; CPU split loop/writer")
    parser.add_argument("--varied", action="store_true",
                        help="with --governed: two request sizes in turn (the limiter's "
                             "head lines made anew for every answer)")
    parser.add_argument("--tight", action="store_true",
                        help="with --governed: the key's limits twice what the run takes "
                             "(its buckets never full: head lines made for every answer)")
    parser.add_argument("--callgrind", action="store_true",
                        help="switch callgrind's instrumentation on for the loop only")
    parser.add_argument("--thread", action="store_true",
                        help="with --ledger/--governed: `ledger_writer: thread` (the worker's "
                             "own thread writes; its CPU is the ledger-writer share). The "
                             "default is the gateway's: the journal child, whose CPU is not "
                             "counted here")
    parser.add_argument("--journal", action="store_true",
                        help="`ledger_writer: journal`, the default (kept for old command lines)")
    parser.add_argument("--warm", type=int, default=0,
                        help="requests served (and the ledger written) before the count")
    args = parser.parse_args(argv)
    result: list[float] = []
    split: list[float] = []

    writer = "thread" if args.thread else "journal" if args.journal else None

    async def run(database: str | None, request: bytes | tuple[bytes, ...] = REQUEST) -> None:
        result.append(await measure(args.requests, args.clients, args.bare, args.callgrind,
                                    database, request, split if database else None,
                                    args.warm, writer))

    if args.ledger or args.governed:
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            sent: bytes | tuple[bytes, ...] = REQUEST
            if args.governed:
                key = _governed_key(directory, (args.requests + args.warm) * args.tight)
                sent = _varied(key) if args.varied else _request(key)
            run_loop(run(f"sqlite:///{directory}/gateway.db", sent))
    else:
        run_loop(run(None))
    what = ("bare proxy" if args.bare else "gateway, governed key near its limits" if args.tight
            else "gateway, governed key, two sizes" if args.varied
            else "gateway, governed key" if args.governed
            else "gateway with the ledger" if args.ledger else "gateway")
    print(f"{what}: {result[0] * 1e6:.1f} µs CPU per request "
          f"({args.requests} requests, {args.clients} clients)")
    if split:
        print(f"  loop thread {split[0] * 1e6:.1f} µs, ledger-writer thread "
              f"{split[1] * 1e6:.1f} µs per request")
        if not args.callgrind:
            print(f"  ledger queue: at most {split[2]:,.0f} records waiting (every 10 ms)")


if __name__ == "__main__":
    main()
