"""Budget holds shared by the workers of one server (governance/sharedholds.py): guards
of several "workers" on one table, in one process (their calls are made one after
another, as the table's lock would order them), and the arithmetic under any order of
reservations, settlements, records, book reads and deaths (hypothesis)."""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold, SpendBook
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey
from azure_openai_proxy.governance.sharedholds import (
    HOLD_COLUMNS,
    MAX_LINGER,
    ExitedColumns,
    SharedHolds,
)
from azure_openai_proxy.governance.sharedlimits import ROW_FIXED, SharedLimits, tag_of
from azure_openai_proxy.runtime.runner import SharedTables, supervise
from tests.waiting import until

NOW = 1_796_212_800.0  # 2026-12-02T12:00:00Z
TODAY = "2026-12-02"


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(key_id: str, budget: float | None = 1.0, team: str | None = None) -> VirtualKey:
    return VirtualKey(id=key_id, name=key_id, secret_hash="-", prefix="sk-aop-", team_id=team,
                      limits=Limits(budget_usd=budget, budget_period="daily"))


TEAM = Team(id="t1", name="t", limits=Limits(budget_usd=1.0, budget_period="monthly"))


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[SharedLimits]:
    made = SharedLimits.create(workers=3, slots=64, directory=str(tmp_path), fixed=HOLD_COLUMNS)
    try:
        yield made
    finally:
        made.remove()


def guard_of(spec: SharedLimits, worker: int, monotonic: Callable[[], float]) -> BudgetGuard:
    """A worker's guard, as the runner shares it: its first book read (the ledger's
    start) already in."""
    guard = BudgetGuard(clock=lambda: NOW, monotonic=monotonic)
    guard.replace(SpendBook(), [], read_at=guard.book_read_started())
    guard.share(SharedHolds(spec.open(worker)))
    return guard


def held(result: BudgetHold | str | None) -> BudgetHold:
    assert isinstance(result, BudgetHold), result
    return result


def tagged_rows(spec: SharedLimits) -> int:
    table = spec.open(0)
    try:
        return sum(1 for row in range(spec.slots) if table.cells[row * spec.stride] > 0)
    finally:
        table.close()


def test_what_one_worker_holds_refuses_the_others(spec: SharedLimits) -> None:
    clock = Clock()
    one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
    limited = key("k1", budget=0.03)
    held(one.reserve(limited, None, 0.02))
    assert two.spent(("key", "k1"), "daily") == pytest.approx(0.02)
    assert two.check(limited, None).exhausted is None
    held(two.reserve(limited, None, 0.02))  # 0.02 < 0.03: admitted, as one worker would
    assert one.check(limited, None).exhausted == "key"  # the early refusal sees it too
    assert one.reserve(limited, None, 0.001) == "key"
    assert two.reserve(limited, None, 0.001) == "key"


def test_a_team_is_shared_like_a_key(spec: SharedLimits) -> None:
    clock = Clock()
    one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
    held(one.reserve(key("k1", None, "t1"), TEAM, 1.0))  # the team's whole budget
    assert two.reserve(key("k2", None, "t1"), TEAM, 0.001) == "team"


def test_a_settled_cost_lingers_until_every_workers_book_has_it(spec: SharedLimits) -> None:
    clock = Clock()
    one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
    owner = ("key", "k1")
    hold = held(one.reserve(key("k1"), None, 0.5))
    one.settle(hold, "r1", 0.2)
    assert two.spent(owner, "daily") == pytest.approx(0.2)
    recorded = SpendBook.from_rows([("key", "k1", TODAY, 0.2)])
    clock.now = 101.0
    one.replace(recorded, ["r1"], read_at=one.book_read_started())
    assert one.spent(owner, "daily") == pytest.approx(0.2)  # its own book: exact
    assert two.spent(owner, "daily") == pytest.approx(0.2)  # its old book + the lingering
    clock.now = 102.0
    two.replace(recorded, [], read_at=two.book_read_started())
    assert two.spent(owner, "daily") == pytest.approx(0.4)  # both, until worker 0 lets go
    clock.now = 103.0
    one.replace(recorded, [], read_at=one.book_read_started())
    assert two.spent(owner, "daily") == pytest.approx(0.2)
    assert one.spent(owner, "daily") == pytest.approx(0.2)
    one.replace(recorded, ["r1"], read_at=one.book_read_started())  # once only
    assert two.spent(owner, "daily") == pytest.approx(0.2)


def test_a_worker_whose_reads_stopped_is_not_waited_for_longer_than_max_linger(
        spec: SharedLimits) -> None:
    clock = Clock()
    one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
    two.replace(SpendBook(), [], read_at=two.book_read_started())  # then never again
    one.settle(held(one.reserve(key("k1"), None, 0.5)), "r1", 0.2)
    clock.now += 1.0
    one.replace(SpendBook(), ["r1"], read_at=one.book_read_started())
    clock.now += MAX_LINGER - 0.5
    one.replace(SpendBook(), [], read_at=one.book_read_started())
    assert two.spent(("key", "k1"), "daily") == pytest.approx(0.2)
    clock.now += 1.0
    one.replace(SpendBook(), [], read_at=one.book_read_started())
    assert two.spent(("key", "k1"), "daily") == 0.0


def test_a_dead_workers_holds_and_read_are_zeroed_by_the_parent(spec: SharedLimits) -> None:
    clock = Clock()
    one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
    limited = key("k1", budget=0.03)
    held(one.reserve(limited, None, 0.03))
    one.replace(SpendBook(), [], read_at=one.book_read_started())
    assert two.reserve(limited, None, 0.01) == "key"
    spec.reset_worker(0)  # what the parent does when worker 0 exits
    held(two.reserve(limited, None, 0.01))
    table = spec.open(1)
    try:
        assert table.cells[spec.workers_row + HOLD_COLUMNS] == 0.0  # its read: no more
    finally:
        table.close()


def _hold_then_exit(spec: SharedLimits, worker: int) -> None:
    guard = guard_of(spec, worker, Clock())
    held(guard.reserve(key("k1", budget=0.03), None, 0.01))


def test_the_parent_clears_the_holds_of_a_worker_that_exits_however_it_exits(
        spec: SharedLimits) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hold_then_exit, args=(spec, n)) for n in (0, 1)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(30)
    assert [p.exitcode for p in workers] == [0, 0]
    third = guard_of(spec, 2, Clock())
    assert third.spent(("key", "k1"), "daily") == pytest.approx(0.02)  # nothing released them
    supervise(workers, None, spec)
    assert third.spent(("key", "k1"), "daily") == 0.0


def test_a_table_has_two_to_row_fixed_columns(tmp_path: Path) -> None:
    for fixed in (1, ROW_FIXED + 1):
        with pytest.raises(ValueError, match="fixed columns"):
            SharedLimits.create(workers=2, slots=4, directory=str(tmp_path), fixed=fixed)


def test_a_key_without_a_budget_takes_no_row(spec: SharedLimits) -> None:
    guard = guard_of(spec, 0, Clock())
    assert guard.reserve(key("free", budget=None), None, 0.5) is None
    assert tagged_rows(spec) == 0
    hold = held(guard.reserve(key("k1"), None, 0.0))  # nothing held yet: no row yet
    assert tagged_rows(spec) == 0
    guard.settle(hold, "r1", 0.1)
    assert tagged_rows(spec) == 1


def test_a_row_nothing_is_held_in_goes_to_another_subject_when_the_table_is_full(
        tmp_path: Path) -> None:
    spec = SharedLimits.create(workers=2, slots=1, directory=str(tmp_path), fixed=HOLD_COLUMNS)
    try:
        clock = Clock()
        one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
        one.settle(held(one.reserve(key("k1"), None, 0.5)), "r1", 0.2)
        held(two.reserve(key("k2"), None, 0.3))  # no room: worker 1 holds it alone
        assert one.spent(("key", "k2"), "daily") == 0.0
        one.release(["r1"])  # lost: k1's row is empty now...
        held(two.reserve(key("k2"), None, 0.3))  # ...and goes to k2
        assert one.reserve(key("k2", budget=0.6), None, 0.0) == "key"
        assert two.spent(("key", "k1"), "daily") == 0.0
        table = spec.open(0)
        assert table.cells[0] == tag_of("key:k2")
        table.close()
    finally:
        spec.remove()


# -- any order of events (hypothesis) ----------------------------------------------------

OWNERS = (("key", "k1"), ("key", "k2"), ("team", "t1"))
KEYS = (key("k1", 100.0, "t1"), key("k2", 100.0, "t1"))
TEAM_WIDE = Team(id="t1", name="t", limits=Limits(budget_usd=100.0, budget_period="daily"))


@dataclass
class _Hold:
    worker: int
    request_id: str
    hold: BudgetHold
    usd: float  # what it holds now: its reservation, then its cost
    settled: bool = False
    committed: float | None = None  # when its record reached the database


@dataclass
class _Server:
    spec: SharedLimits
    clock: Clock
    guards: dict[int, BudgetGuard] = field(default_factory=dict)
    holds: list[_Hold] = field(default_factory=list)
    read_at: dict[int, float] = field(default_factory=dict)
    sequence: int = 0
    # The parent's side (supervise): an exited worker's column kept until every live
    # book has what it committed; and what it held uncommitted, counted meanwhile.
    exited: ExitedColumns | None = None
    gone: list[_Hold] = field(default_factory=list)

    def tick(self) -> float:
        self.clock.now += 0.01  # never MAX_LINGER in a run: nothing leaves early
        return self.clock.now

    def book(self, read_at: float) -> SpendBook:
        return SpendBook.from_rows(
            (owner[0], owner[1], TODAY, h.usd) for h in self.holds
            if h.committed is not None and h.committed < read_at for owner in h.hold.owners)

    def reserve(self, worker: int, which: int, usd: float) -> None:
        guard = self.guards[worker]
        result = guard.reserve(KEYS[which], TEAM_WIDE, usd)
        assert isinstance(result, BudgetHold)
        self.sequence += 1
        self.holds.append(_Hold(worker, f"r{self.sequence}", result, usd))

    def settle(self, index: int, usd: float) -> None:
        hold = self.holds[index]
        if hold.settled:
            return
        self.guards[hold.worker].settle(hold.hold, hold.request_id, usd)
        hold.settled, hold.usd = True, usd

    def commit(self, index: int) -> None:
        hold = self.holds[index]
        if hold.settled and hold.usd > 0 and hold.committed is None:
            hold.committed = self.tick()

    def refresh(self, worker: int) -> None:
        guard = self.guards[worker]
        self.tick()  # a read begins after the commits before it returned
        read_at = guard.book_read_started()
        recorded = [h.request_id for h in self.holds
                    if h.worker == worker and h.committed is not None and h.committed < read_at]
        guard.replace(self.book(read_at), recorded, read_at)
        self.read_at[worker] = read_at

    def kill(self, worker: int) -> None:
        del self.guards[worker]
        self.read_at.pop(worker, None)
        assert self.exited is not None
        self.exited.exited(worker)
        # What it held and had not written is gone with it (as in a real crash); its
        # column counts it until the parent resets it.
        self.gone += [h for h in self.holds if h.worker == worker and h.committed is None]
        self.holds = [h for h in self.holds if h.worker != worker or h.committed is not None]

    def supervise(self) -> None:
        """The parent's look (every second in supervise)."""
        assert self.exited is not None
        self.exited.reset_due()


_EVENTS = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 2), st.integers(0, 1),
              st.floats(0, 1, allow_nan=False)),
    st.tuples(st.just("settle"), st.integers(0, 7), st.integers(0, 1),
              st.floats(0, 1, allow_nan=False)),
    st.tuples(st.just("commit"), st.integers(0, 7), st.just(0), st.just(0.0)),
    st.tuples(st.just("refresh"), st.integers(0, 2), st.just(0), st.just(0.0)),
    st.tuples(st.just("kill"), st.integers(0, 2), st.just(0), st.just(0.0)),
), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=_EVENTS)
# A worker killed once its cost is in the database and before the others read it: its
# column must count it until they have (failed with the parent's reset at exit).
@example(events=[("reserve", 0, 0, 0.5), ("settle", 0, 0, 0.3), ("commit", 0, 0, 0.0),
                 ("kill", 0, 0, 0.0)])
def test_every_worker_counts_every_live_hold_its_book_lacks_and_nothing_twice_for_long(
        tmp_path_factory: pytest.TempPathFactory, events: list[tuple[str, int, int, float]]) -> None:
    spec = SharedLimits.create(workers=3, slots=64, fixed=HOLD_COLUMNS,
                               directory=str(tmp_path_factory.mktemp("holds")))
    try:
        server = _Server(spec, Clock())
        server.exited = ExitedColumns(spec, server.clock)
        server.guards = {w: guard_of(spec, w, server.clock) for w in range(3)}
        server.read_at = {w: server.clock.now for w in range(3)}
        for kind, number, which, usd in events:
            if kind == "reserve" and number in server.guards:
                server.reserve(number, which, usd)
            elif kind == "settle" and server.holds:
                server.settle(number % len(server.holds), usd)
            elif kind == "commit" and server.holds:
                server.commit(number % len(server.holds))
            elif kind == "refresh" and number in server.guards:
                server.refresh(number)
            elif kind == "kill" and number in server.guards and len(server.guards) > 1:
                server.kill(number)
            server.supervise()
            _check(server)
        # Every record written, every worker reading twice: nothing is held any more.
        for index in range(len(server.holds)):
            server.settle(index, 0.5)
            server.commit(index)
        for _ in range(2):
            for worker in list(server.guards):
                server.refresh(worker)
            server.supervise()
        _check(server)
        table = spec.open(0)
        try:
            for row in range(0, spec.slots * spec.stride, spec.stride):
                assert table.cells[row + 1] == pytest.approx(0.0, abs=1e-9)
        finally:
            table.close()
    finally:
        spec.remove()


def _check(server: _Server) -> None:
    spec = server.spec
    table = spec.open(0)
    try:
        cells = table.cells
        for row in range(0, spec.slots * spec.stride, spec.stride):
            columns = cells[row + HOLD_COLUMNS:row + spec.stride].tolist()
            assert all(c >= 0.0 for c in columns)
            assert cells[row + 1] == pytest.approx(math.fsum(columns), abs=1e-9)
    finally:
        table.close()
    for worker, guard in server.guards.items():
        read_at = server.read_at.get(worker, -math.inf)
        for owner in OWNERS:
            # What it counts is at least its book plus every live hold its book lacks
            # (an exited worker's records too: its column stays until every book has
            # them)...
            lacking = sum(h.usd for h in server.holds
                          if owner in h.hold.owners
                          and (h.committed is None or h.committed >= read_at))
            book = guard.book.spent(owner, TODAY)
            counted = guard.spent(owner, "daily")
            assert counted >= book + lacking - 1e-6
            # ...and at most that plus what the others' books have and its may not yet.
            recent = sum(h.usd for h in server.holds
                         if owner in h.hold.owners and h.committed is not None
                         and h.committed < read_at and h.worker != worker)
            recent += sum(h.usd for h in server.gone if owner in h.hold.owners)
            assert counted <= book + lacking + recent + 1e-6


def _hold_then_wait(spec: SharedLimits, worker: int, mapped: Any, go: Any) -> None:
    guard = guard_of(spec, worker, Clock())
    held(guard.reserve(key("k1", budget=0.03), None, 0.01))
    mapped.wait(30)
    go.wait(30)


def test_a_table_gone_from_its_directory_does_not_end_the_parents_supervision(
        spec: SharedLimits, caplog: pytest.LogCaptureFixture) -> None:
    # Failed before: the FileNotFoundError of the first reset left the parent's loop, and
    # the second worker was never waited for (nor its column reset).
    context = multiprocessing.get_context("spawn")
    mapped, go = context.Barrier(3), context.Event()
    workers = [context.Process(target=_hold_then_wait, args=(spec, n, mapped, go))
               for n in (0, 1)]
    for process in workers:
        process.start()
    mapped.wait(30)
    spec.remove()  # /dev/shm cleaned up under the server (systemd's RemoveIPC, an operator)
    go.set()
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        supervise(workers, None, spec)
    assert [p.exitcode for p in workers] == [0, 0]
    assert caplog.text.count("cannot reset an exited worker") == 2


def test_tables_that_cannot_be_made_are_none_and_said_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        tables = SharedTables.create(2, directory=str(not_a_directory))
    assert tables == SharedTables(None, None, None)
    assert tables.open(0) == (None, None, None)
    tables.remove()
    assert "shared table of rate limits" in caplog.text
    assert "shared table of budget holds" in caplog.text
    assert "shared table of chained contexts" in caplog.text


def test_a_worker_killed_between_its_column_and_the_total_leaves_no_false_refusal(
        spec: SharedLimits) -> None:
    clock = Clock()
    one, two = guard_of(spec, 0, clock), guard_of(spec, 1, clock)
    limited = key("k1", budget=0.5)
    held(one.reserve(limited, None, 0.5))
    assert two.reserve(limited, None, 0.1) == "key"
    # Worker 0 lets go of it (its column written: 0) and is killed before the total is
    # written, as SIGKILL may land between the two writes of `SharedHolds.put`.
    table = spec.open(0)
    try:
        row = table.find(tag_of("key:k1"))
        assert row is not None
        table.cells[row + table.column] = 0.0
    finally:
        table.close()
    spec.reset_worker(0)  # the parent, as it sees worker 0 exit
    # Failed before: the total kept 0.5 with every column 0, and every worker refused
    # the key for good (only a put rewrites a total, and a refused key puts nothing).
    held(two.reserve(limited, None, 0.1))


def test_with_no_book_read_anywhere_a_spooled_cost_still_lingers_up_to_max_linger(
        spec: SharedLimits) -> None:
    # The database down since start: no worker has read a book. A batch that could not
    # be written is added to worker 0's book (`SpendBook.plus`); worker 1's has nothing.
    clock = Clock()
    one, two = BudgetGuard(lambda: NOW, clock), BudgetGuard(lambda: NOW, clock)
    one.share(SharedHolds(spec.open(0)))
    two.share(SharedHolds(spec.open(1)))
    one.settle(held(one.reserve(key("k1"), None, 0.5)), "r1", 0.2)
    one.replace(one.book.plus([(("key", "k1"), TODAY, 0.2)]), ["r1"])
    # Failed before: "no read" counted as every book having it, and it left at once.
    assert two.spent(("key", "k1"), "daily") == pytest.approx(0.2)
    clock.now += MAX_LINGER + 0.5
    one.replace(one.book, [])
    assert two.spent(("key", "k1"), "daily") == 0.0


def test_releasing_what_is_not_held_takes_no_lock(spec: SharedLimits) -> None:
    # The event loop releases the records it could not spool, budgeted or not: it must
    # not wait for the table's lock for nothing (another process holding it).
    guard = guard_of(spec, 0, Clock())
    other = spec.open(1)  # another open file: its flock excludes this worker's
    other.lock()
    done = threading.Event()

    def release() -> None:
        guard.release(["not-held"])
        done.set()

    thread = threading.Thread(target=release)
    thread.start()
    try:
        assert done.wait(10)  # failed before: it waited for the lock held above
    finally:
        other.unlock()
        thread.join()
        other.close()


def _spend_then_exit(spec: SharedLimits) -> None:
    """Worker 0: a cost of 0.2 recorded and in its own book (lingering in its column
    for the others), then a clean exit."""
    guard = guard_of(spec, 0, time.monotonic)
    guard.settle(held(guard.reserve(key("k1"), None, 0.5)), "r1", 0.2)
    guard.replace(SpendBook.from_rows([("key", "k1", TODAY, 0.2)]), ["r1"],
                  read_at=guard.book_read_started())


def _wait_for(go: Any) -> None:
    go.wait(60)


def test_an_exited_workers_recorded_costs_count_until_every_live_book_has_them(
        spec: SharedLimits) -> None:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    workers = [context.Process(target=_spend_then_exit, args=(spec,)),
               context.Process(target=_wait_for, args=(go,))]  # keeps the server up
    mine = guard_of(spec, 2, time.monotonic)  # a live worker: its book predates the cost
    for process in workers:
        process.start()
    supervising = threading.Thread(target=supervise, args=(workers, None, spec))
    supervising.start()
    try:
        assert multiprocessing.connection.wait([workers[0].sentinel], 60)
        table = spec.open(2)
        try:  # its read stamp was set: the parent has seen the exit once it is 0 again
            until(lambda: table.cells[spec.workers_row + HOLD_COLUMNS] == 0.0, 30,
                  "the parent never saw worker 0 exit")
        finally:
            table.close()
        # Failed before: its column was zeroed at its exit, and this worker, whose book
        # does not have the record yet, counted the cost nowhere.
        assert mine.spent(("key", "k1"), "daily") == pytest.approx(0.2)
        recorded = SpendBook.from_rows([("key", "k1", TODAY, 0.2)])
        mine.replace(recorded, [], read_at=mine.book_read_started())  # a read after it
        until(lambda: mine.spent(("key", "k1"), "daily") == pytest.approx(0.2), 30,
              "the exited worker's column was never let go")  # its book's, once
    finally:
        go.set()
        supervising.join(60)
    assert not supervising.is_alive()
    assert [p.exitcode for p in workers] == [0, 0]
    assert tagged_rows(spec) == 1 and mine.spent(("key", "k1"), "daily") == pytest.approx(0.2)


def test_an_exited_column_of_a_table_gone_is_not_kept(spec: SharedLimits) -> None:
    """The table removed from /dev/shm after a worker's exit: every later look failed
    before the columns were let go, so the parent polled (a warning a second) forever
    and the dead worker was never replaced (`supervise` waits while `waiting`)."""
    columns = ExitedColumns(spec, Clock())
    columns.exited(1)
    assert columns.waiting(1)
    spec.remove()
    with pytest.raises(OSError):
        columns.reset_due()
    assert not columns.waiting(1) and columns.reset_due() is None
