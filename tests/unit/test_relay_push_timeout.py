"""A pushed stream's read timeout (`_Connection._watch`/`_check_deadline`): Azure silent
after some frames fails the stream after at least the timeout and at most an eighth of it
more, plus two of the loop's delays however late or early each check runs (a check is
not a clock read per read: `_QUIET_CHECKS` per timeout). Run on a clock of the test's
own: the connection's timers fire when the test says, no wall-clock time passes."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

import pytest

from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.normalize.stream import StreamPolicy
from tests.unit.test_relay_push import Exchange, wire
from tests.unit.test_stream_steady import long_stream

TIMEOUT = 8.0  # a check every second
STEP = 0.001  # a loop's turn: what a timer due now or past waits at least


class _Timer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _Timer) -> bool:
        return self.when < other.when


class SkewedClock:
    """The connection's `loop` for `time()` and `call_at()`: each timer fires `skew` s
    off the time it was set for (late if positive, early if negative), never before a
    loop's turn has passed."""

    def __init__(self, skew: float) -> None:
        self.now = 0.0
        self.skew = skew
        self._timers: list[_Timer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(max(when + self.skew, self.now + STEP), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Fire the timers due by `until` in order (or until `stop()`); now is `until`."""
        while self._timers and self._timers[0].when <= until and not stop():
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self.now = timer.when
                timer.callback()
        if not stop():
            self.now = until


async def _silence_before_timeout(skew: float, read_at: float) -> float:
    """Azure's last read at `read_at` (the watch began at 0): how long it was silent
    when the stream failed."""
    exchange = Exchange(pushed=True, policy=StreamPolicy(client_model="gpt-4o"),
                        read_timeout=TIMEOUT)
    frames = long_stream()
    exchange.start(wire(frames[:4], end=False))
    await exchange.settle()
    conn = exchange.conn
    clock = SkewedClock(skew)
    conn.loop = clock  # type: ignore[assignment]
    conn._watch()  # the read timeout from 0, on the test's clock
    clock.run(read_at)
    conn.data_received(wire(frames[4:5], end=False))
    clock.run(20 * TIMEOUT, stop=lambda: conn.error is not None)
    assert isinstance(conn.error, UpstreamTimeout)
    assert exchange.task is not None
    await asyncio.wait_for(exchange.task, 5)
    assert exchange.record.error == UpstreamTimeout.__name__
    assert b'"code":"stream_interrupted"' in exchange.channel.writes[-1]
    return clock.now - read_at


@pytest.mark.parametrize("skew", [0.0, 0.1, -0.05])
async def test_a_silent_azure_fails_the_pushed_stream_after_one_to_nine_eighths_of_it(
        skew: float) -> None:
    # Reads just after a check and just before one: the two ends of the bound.
    late = max(skew, 0.0)
    for read_at in (0.0, 2.2 + 1e-6, 3.3 - 1e-6, 2.96, 5.5, 7.99):
        silence = await _silence_before_timeout(skew, read_at)
        assert TIMEOUT <= silence <= TIMEOUT * 9 / 8 + 2 * late + 2 * STEP + 1e-9, (
            skew, read_at, silence)
