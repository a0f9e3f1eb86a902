"""One structured line per request: no prompts, no keys.

The line is a JSON object, built only when the `azure_openai_proxy.access` logger is
enabled for INFO, so a gateway run at `warning` pays nothing for it. Lines go to stderr
through `AccessLog`, written at most every 200 ms (or per 32 requests): going through
`logging` with a flush per line cost a fifth of the gateway's throughput. A finished
request's record is only queued with its time; the lines are built when the queue is
written, many at a time, which costs measurably less than one at a time between two
requests (the formatting code stays hot in the CPU's caches). Attach a handler to
`azure_openai_proxy.access` and the lines go through `logging` at once instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import BinaryIO

import orjson

from azure_openai_proxy.observability.record import RequestRecord

__all__ = ["AccessLog", "access_logger", "configure_logging"]

access_logger = logging.getLogger("azure_openai_proxy.access")
log = logging.getLogger("azure_openai_proxy")


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))  # the tail of every timestamp


class AccessLog:
    """Buffered JSON lines: one write per flush interval, not one per request."""

    def __init__(
        self, stream: BinaryIO | None = None, *, flush_interval: float = 0.2,
        max_pending: int = 32,
    ) -> None:
        self._stream = stream
        self._interval = flush_interval
        self._max = max_pending
        self._pending: list[tuple[RequestRecord, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._stamp = ""

    def write(self, record: RequestRecord) -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        if access_logger.handlers:
            access_logger.info(orjson.dumps(record.line()).decode())
            return
        pending = self._pending
        pending.append((record, time.time()))
        if len(pending) >= self._max or self._interval <= 0:
            self.flush()
        elif self._timer is None:
            # The loop kept from the last time: `asyncio.get_running_loop()` is a getpid()
            # system call on 3.11, and a quiet worker arms a timer for most requests), or
            # the one running now where that one no longer runs (a timer on a stopped
            # loop would never fire).
            loop = self._loop
            if loop is None or not loop.is_running():
                self._loop = loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._interval, self.flush)

    def _lines(self) -> bytes:
        out: list[bytes] = []
        pending, self._pending = self._pending, []  # a record that fails is not retried
        for record, now in pending:
            line = record.line()
            second = int(now)
            stamp = self._stamp if second == self._second else self._new_second(second)
            line["ts"] = stamp + _MILLIS[int((now - second) * 1000) % 1000]
            try:
                out.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
            except orjson.JSONEncodeError:
                # A value orjson cannot write (an integer past 64 bits, a lone surrogate
                # in some text): the standard library writes anything.
                out.append(json.dumps(line, default=str).encode() + b"\n")
        return b"".join(out)

    def _new_second(self, second: int) -> str:
        # Formatting a date costs more than the rest of a line: once a second.
        self._second = second
        self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._stamp

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        data = self._lines()
        stream = self._stream if self._stream is not None else sys.stderr.buffer
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: never break a request for a log
            pass


def configure_logging(level: str) -> None:
    """Plain lines to stderr; the access lines are JSON objects already."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("azure_openai_proxy")
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    root.propagate = False
