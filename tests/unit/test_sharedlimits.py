"""The rate-limit table the workers of one server share (governance/sharedlimits.py),
and the limiter counting in it: rows, a full table, two limiters on one table, and two
real processes taking from one key at once."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter, Refusal
from azure_openai_proxy.governance.sharedlimits import SharedLimits, SharedTable
from azure_openai_proxy.runtime.runner import supervise
from tests.unit.sharedworkers import Clock, SharedWorkers


def admitted(result: Admission | Refusal) -> Admission:
    assert isinstance(result, Admission), result
    return result


def test_a_name_has_one_row_for_every_worker_and_names_do_not_share(spec: SharedLimits) -> None:
    one, two = spec.open(0), spec.open(1)
    rows = {one.row(f"key:k{n}") for n in range(40)}  # 40 of 64: probing past collisions
    assert None not in rows and len(rows) == 40
    assert all(row is not None and row % spec.stride == 0 for row in rows)
    assert two.row("key:k7") == one.row("key:k7")


def test_a_full_table_logs_once_and_counts_the_rest_per_worker(
        shared: SharedWorkers, caplog: pytest.LogCaptureFixture) -> None:
    _spec, _clock, first, second = shared.pair(slots=2)
    limits = Limits(rpm=1)
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        for name in ("a", "b", "c", "d"):
            admitted(first.take(first.plan(name, limits, None, None), 0))
    assert [r.message for r in caplog.records].count(
        "the shared rate-limit table is full (2 keys and teams): the ones beyond it "
        "are limited per worker process") == 1
    # "a" has a row: the other worker sees its minute spent; "c" has none: its own.
    assert isinstance(second.take(second.plan("a", limits, None, None), 0), Refusal)
    admitted(second.take(second.plan("c", limits, None, None), 0))


def test_two_workers_share_a_keys_rpm_tpm_and_parallel(spec: SharedLimits, shared: SharedWorkers) -> None:
    clock = Clock()
    workers = [shared.limiter(spec, n, clock) for n in (0, 1)]
    limits = Limits(rpm=5, tpm=1000, max_parallel=3)
    held = [admitted(workers[n % 2].take(workers[n % 2].plan("k", limits, None, None), 100))
            for n in range(3)]
    refused = workers[1].take(workers[1].plan("k", limits, None, None), 100)
    assert isinstance(refused, Refusal) and refused.kind == "parallel"
    workers[0].settle(held[0], 100)
    fourth = admitted(workers[1].take(workers[1].plan("k", limits, None, None), 100))
    assert fourth.headers["x-ratelimit-remaining-requests"] == "1"
    assert fourth.headers["x-ratelimit-remaining-tokens"] == "600"
    for admission, worker in ((held[1], 1), (held[2], 0), (fourth, 1)):
        workers[worker].settle(admission, None)  # unknown usage: the tokens come back
    fifth = admitted(workers[0].take(workers[0].plan("k", limits, None, None), 0))
    assert fifth.headers["x-ratelimit-remaining-requests"] == "0"
    assert fifth.headers["x-ratelimit-remaining-tokens"] == "900"
    refused = workers[1].take(workers[1].plan("k", limits, None, None), 0)
    assert isinstance(refused, Refusal) and refused.kind == "requests"
    clock.now += 12  # a fifth of a minute: one request back, for either worker
    admitted(workers[1].take(workers[1].plan("k", limits, None, None), 0))
    view = workers[0].snapshot()["key:k"]
    assert view["in_flight"] == 2 and view["requests"]["remaining"] == 0


def test_a_team_is_shared_like_a_key(shared: SharedWorkers) -> None:
    _spec, _clock, first, second = shared.pair()
    team = Limits(rpm=2)
    admitted(first.take(first.plan("k1", Limits(), "t", team), 0))
    admitted(second.take(second.plan("k2", Limits(), "t", team), 0))
    refused = first.take(first.plan("k3", Limits(), "t", team), 0)
    assert isinstance(refused, Refusal) and refused.subject == "team:t"


def test_a_lower_limit_set_by_one_worker_caps_what_is_left_for_all(shared: SharedWorkers) -> None:
    # The second worker reloads the lower limit before it has planned the key: the
    # row's limit is changed by that reload (governance/sharedrows.py `set_rows`), and the first,
    # yet to reload, counts by it. A worker new to a key joins the row as it is (a
    # worker yet to reload would else set its old limit back, session 27).
    _spec, _clock, first, second = shared.pair()
    ten, lower = Limits(rpm=10), Limits(rpm=2)
    first.forget({"key:k": ten})
    second.forget({"key:k": ten})
    admitted(first.take(first.plan("k", ten, None, None), 0))
    second.forget({"key:k": lower})
    admitted(second.take(second.plan("k", lower, None, None), 0))
    admitted(first.take(first.plan("k", ten, None, None), 0))
    assert isinstance(second.take(second.plan("k", lower, None, None), 0), Refusal)


def test_a_dead_workers_requests_in_flight_are_released(shared: SharedWorkers) -> None:
    spec, _clock, first, second = shared.pair()
    limits = Limits(max_parallel=2)
    for _ in range(2):
        admitted(second.take(second.plan("k", limits, None, None), 0))
    assert isinstance(first.take(first.plan("k", limits, None, None), 0), Refusal)
    spec.reset_worker(1)  # what the parent does when worker 1 dies
    admitted(first.take(first.plan("k", limits, None, None), 0))
    assert first.snapshot()["key:k"]["in_flight"] == 1


def test_the_worker_number_must_be_one_of_the_tables(spec: SharedLimits) -> None:
    with pytest.raises(ValueError, match="worker 2 is not one of 2"):
        spec.open(2)


# -- two real processes ------------------------------------------------------------------

def _frozen_clock() -> float:
    return 1000.0  # no refill while the processes race: the limit is exact


def _hammer(spec: SharedLimits, worker: int, start: Any, results: Any) -> None:
    limiter = RateLimiter(_frozen_clock)
    limiter.share(spec.open(worker))
    plan = limiter.plan("k", Limits(rpm=300, tpm=30_000), None, None)
    start.wait(30)
    count = 0
    for _ in range(1000):
        result = limiter.take(plan, 10)
        if isinstance(result, Admission):
            count += 1
            limiter.settle(result, 10)
    results.put(count)


def test_two_processes_hammering_one_key_admit_exactly_its_limit(spec: SharedLimits) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_hammer, args=(spec, n, start, results))
                 for n in (0, 1)]
    for process in processes:
        process.start()
    counts = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert sum(counts) == 300, counts


def _hold_the_lock(spec: SharedLimits, held: Any) -> None:
    table = spec.open(1)
    table.lock()
    held.set()
    threading.Event().wait(60)  # killed before this ends


def test_a_worker_killed_holding_the_lock_blocks_no_one(spec: SharedLimits) -> None:
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    process = context.Process(target=_hold_the_lock, args=(spec, held))
    process.start()
    try:
        assert held.wait(30)
        table = spec.open(0)
        assert not _locks_within(table, 0.5)  # it is held: the lock works across processes
    finally:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
    assert _locks_within(table, 10)  # the kernel released it with its holder


def _locks_within(table: SharedTable, seconds: float) -> bool:
    """Whether `table.lock()` returns within `seconds` (the thread is left blocked when
    not: it takes the lock once its holder dies, and releases it)."""
    locked = threading.Event()

    def lock() -> None:
        table.lock()
        locked.set()
        table.unlock()

    threading.Thread(target=lock, daemon=True).start()
    return locked.wait(seconds)


def _take_two_then_exit(spec: SharedLimits, worker: int, killed: bool) -> None:
    limiter = RateLimiter(_frozen_clock)
    limiter.share(spec.open(worker))
    plan = limiter.plan("k", Limits(max_parallel=8), None, None)
    for _ in range(2):
        admitted(limiter.take(plan, 0))
    if killed:
        os.kill(os.getpid(), signal.SIGKILL)


def test_the_parent_zeroes_the_requests_in_flight_of_a_worker_that_died(
        spec: SharedLimits, caplog: pytest.LogCaptureFixture, shared: SharedWorkers) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_take_two_then_exit, args=(spec, n, n == 1))
               for n in (0, 1)]
    for process in workers:
        process.start()
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        supervise(workers, spec)
    assert [p.exitcode for p in workers] == [0, -signal.SIGKILL]
    assert "worker 1 (pid" in caplog.text and "worker 0 (pid" not in caplog.text
    limiter = shared.limiter(spec, 0, Clock())
    limiter.plan("k", Limits(max_parallel=8), None, None)
    # Worker 0 exited on its own (a clean exit settles first); worker 1's two are gone.
    assert limiter.snapshot()["key:k"]["in_flight"] == 2


def test_a_table_that_cannot_be_made_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        SharedLimits.create(workers=2, slots=2**40, directory=str(tmp_path))  # 88 TB: no room
    assert list(tmp_path.iterdir()) == []


def test_the_table_is_made_in_memory_where_it_can_be() -> None:
    spec = SharedLimits.create(workers=2, slots=4)
    try:
        assert Path(spec.path).exists()
        assert Path(spec.path).parent == Path("/dev/shm") or not Path("/dev/shm").is_dir()
    finally:
        spec.remove()
    assert not Path(spec.path).exists()
