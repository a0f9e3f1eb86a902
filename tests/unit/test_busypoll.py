"""Busy polling: the loop keeps polling for the window after a poke, then sleeps again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from azure_openai_proxy.server.busypoll import BusyPoll, cpus_available


class CountingBusyPoll(BusyPoll):
    __slots__ = ("ticks",)

    def __init__(self, window_us: int) -> None:
        super().__init__(window_us)
        self.ticks = 0

    def _tick(self) -> None:
        self.ticks += 1
        super()._tick()


async def test_a_poke_keeps_the_loop_polling_for_the_window_then_stops() -> None:
    busy = CountingBusyPoll(20_000)
    busy.poke()
    busy.poke()  # a second poke extends the window; it does not start a second chain
    await asyncio.sleep(0.005)
    assert busy._spinning
    assert busy.ticks >= 3  # the loop came back many times instead of sleeping 5 ms
    for _ in range(200):
        if not busy._spinning:
            break
        await asyncio.sleep(0.01)
    assert not busy._spinning  # the window passed: no CPU spent while idle
    ticks = busy.ticks
    await asyncio.sleep(0.02)
    assert busy.ticks == ticks


def test_off_when_zero_or_with_under_two_cpus(tmp_path: Path) -> None:
    assert BusyPoll.from_setting(0) is None
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU
    assert cpus_available(tmp_path) == 0.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpus_available(tmp_path) >= 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus_available(v1) == min(1.5, cpus_available(tmp_path / "none"))
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cpus_available(v1) == cpus_available(tmp_path / "none")
