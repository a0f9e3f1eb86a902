"""Busy polling: the loop keeps polling for the window after a poke, then sleeps again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from azure_openai_proxy.http.busypoll import QUIET_AT_MOST, BusyPoll, cpus_available, worth_spinning
from tests.waiting import until_async


class CountingBusyPoll(BusyPoll):
    __slots__ = ("ticks",)

    def __init__(self, window_us: int) -> None:
        super().__init__(window_us)
        self.ticks = 0

    def _tick(self) -> None:
        self.ticks += 1
        super()._tick()


async def test_a_poke_keeps_the_loop_polling_for_the_window_then_stops() -> None:
    busy = CountingBusyPoll(300_000)  # long enough that a busy machine cannot outrun it
    busy.poke()
    busy.poke()  # a second poke extends the window; it does not start a second chain
    await asyncio.sleep(0.005)
    assert busy._spinning
    assert busy.ticks >= 3  # the loop came back many times instead of sleeping 5 ms
    await until_async(lambda: not busy._spinning)
    assert not busy._spinning  # the window passed: no CPU spent while idle
    ticks = busy.ticks
    await asyncio.sleep(0.02)
    assert busy.ticks == ticks


def test_off_when_zero(tmp_path: Path) -> None:
    assert BusyPoll.from_setting(0) is None


def test_cpu_quotas_are_read_up_the_process_cgroup_tree(tmp_path: Path) -> None:
    unlimited = cpus_available(tmp_path / "none", tmp_path / "none")  # the affinity alone
    own = tmp_path / "cgroup"

    # cgroup v2 namespaced (a container): the process sits at the root.
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("50000 100000\n")  # --cpus 0.5
    own.write_text("0::/\n")
    assert cpus_available(tmp_path / "v2", own) == min(0.5, unlimited)
    (tmp_path / "v2" / "cpu.max").write_text("max 100000\n")
    assert cpus_available(tmp_path / "v2", own) == unlimited

    # cgroup v2 on a host: the quota is on an ancestor of the process's own cgroup.
    service = tmp_path / "host" / "system.slice" / "gateway.service"
    service.mkdir(parents=True)
    (service / "cpu.max").write_text("max 100000\n")
    (service.parent / "cpu.max").write_text("150000 100000\n")
    own.write_text("0::/system.slice/gateway.service\n")
    assert cpus_available(tmp_path / "host", own) == min(1.5, unlimited)

    # Hybrid and v1: the cpu controller's cfs quota; -1 is no quota.
    v1 = tmp_path / "v1" / "cpu,cpuacct" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("25000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    own.write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cpus_available(tmp_path / "v1", own) == min(0.25, unlimited)
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus_available(tmp_path / "v1", own) == unlimited


def test_a_spin_is_worth_it_only_while_the_worker_is_quiet() -> None:
    assert worth_spinning(0)  # one client: its request is the only one
    assert worth_spinning(QUIET_AT_MOST)
    assert not worth_spinning(QUIET_AT_MOST + 1)
    assert not worth_spinning(1000)  # a thousand streams open


class OpenRequests:
    """A stand-in for the transport's count of connections in use, and how often it is read."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.count


async def test_with_many_requests_open_a_poke_starts_no_spin() -> None:
    streams = OpenRequests(1000)
    busy = BusyPoll(300_000, streams)
    busy.poke()
    assert not busy.spinning
    assert streams.reads == 1
    streams.count = 1  # the streams ended: the next poke spins again
    busy.poke()
    assert busy.spinning
    busy.poke()  # a spin under way is extended without reading the count again
    assert streams.reads == 2
    await until_async(lambda: not busy.spinning)


async def test_a_retracted_poke_stops_its_own_spin_but_not_a_later_pokes() -> None:
    busy = CountingBusyPoll(300_000)
    mine = busy.poke()
    busy.retract(mine)  # before the chain's first turn: that turn ends it
    await until_async(lambda: not busy._spinning)
    assert busy.ticks == 1

    mine = busy.poke()
    busy.poke()  # another request's poke, after: its window stands
    busy.retract(mine)
    await asyncio.sleep(0.005)
    assert busy._spinning and busy.ticks >= 3
    busy.retract(busy.poke())  # a poke taken back restores the window it found
    await asyncio.sleep(0.005)
    assert busy._spinning


async def test_spins_after_the_first_look_the_loop_up_no_more(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `asyncio.get_running_loop()` is a getpid() system call on 3.11, and a quiet worker
    # starts a spin per request (issue 15).
    lookups: list[None] = []
    running = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        lookups.append(None)
        return running()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    busy = CountingBusyPoll(1_000)
    for _ in range(3):
        busy.poke()
        await until_async(lambda: not busy._spinning)
    assert busy.ticks >= 3  # three spins, each at least a turn
    assert len(lookups) == 1


def test_a_spin_after_the_kept_loop_stopped_turns_on_the_running_loop() -> None:
    """The loop kept from the last spin has stopped (not closed: a test's loop left
    open, a runner that starts another): the next spin turns on the loop running now. A
    chain started on the stopped loop would never turn, and `_spinning` would stay set,
    with no spin again."""
    busy = CountingBusyPoll(1_000)

    async def one_spin() -> int:
        busy.poke()
        await until_async(lambda: not busy._spinning, timeout=2.0)
        return busy.ticks

    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(one_spin()) >= 1
        ticks = busy.ticks
        assert second.run_until_complete(one_spin()) > ticks  # it turned on this loop
    finally:
        first.close()
        second.close()
