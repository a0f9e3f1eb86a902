"""The shared rate-limit table's rows over a server's life (governance/sharedlimits.py):
who takes a row, when it is given back, how far a name is looked for, a changed limit
shared as unshared, stamps that never go back, and the tables of killed parents."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter, Refusal
from azure_openai_proxy.governance.sharedlimits import (
    IDLE_SECONDS,
    PROBES,
    SharedLimits,
    sweep,
    tag_of,
)
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import Clock, admitted


def _tagged_rows(spec: SharedLimits) -> int:
    table = spec.open(0)
    try:
        return sum(1 for offset in range(0, spec.slots * spec.stride, spec.stride)
                   if table.cells[offset] > 0.0)
    finally:
        table.close()


def test_keys_without_limits_do_not_take_the_rows_a_limited_key_needs(shared: SharedWorkers) -> None:
    # Keys without any limit (or deleted ones) filled the table, and a key with RPM 1 was
    # then counted by each worker alone: with two workers, two requests a minute.
    _spec, _clock, first, second = shared.pair(slots=4)
    for n in range(4):
        admitted(first.take(first.plan(f"open{n}", Limits(), None, None), 0))
    first.forget([])
    limited = Limits(rpm=1)
    admitted(first.take(first.plan("limited", limited, None, None), 0))
    assert isinstance(second.take(second.plan("limited", limited, None, None), 0),
                      Refusal), "an RPM of 1 admitted twice in one minute"


def test_an_unlimited_key_takes_no_row_until_it_gets_a_limit(shared: SharedWorkers) -> None:
    spec, _clock, first, second = shared.pair()
    # (settled: one still running would hold the parallel slot set next, as with one
    # worker, test_govleft_limit_changes.py)
    first.settle(admitted(first.take(first.plan("k", Limits(), "t", Limits()), 0)), None)
    assert _tagged_rows(spec) == 0
    limited = Limits(max_parallel=1)
    admitted(first.take(first.plan("k", limited, "t", Limits()), 0))
    assert _tagged_rows(spec) == 1
    assert isinstance(second.take(second.plan("k", limited, None, None), 0), Refusal)


def test_deleted_keys_give_their_rows_back(shared: SharedWorkers) -> None:
    # Keys that churn (created, used, deleted) never fill the table.
    spec, _clock, first, second = shared.pair(slots=8)
    limits = Limits(rpm=1)
    for n in range(50):
        first.settle(admitted(first.take(first.plan(f"churn{n}", limits, None, None), 0)), 0)
        first.forget([])
    assert _tagged_rows(spec) == 0
    admitted(first.take(first.plan("last", limits, None, None), 0))
    assert isinstance(second.take(second.plan("last", limits, None, None), 0), Refusal)


def test_a_row_with_requests_in_flight_is_kept_until_they_end(spec: SharedLimits, shared: SharedWorkers) -> None:
    clock = Clock()
    first = shared.limiter(spec, 0, clock)
    admission = admitted(first.take(first.plan("k", Limits(max_parallel=1), None, None), 0))
    first.forget([])
    assert _tagged_rows(spec) == 1
    first.settle(admission, 0)
    first.forget([])
    assert _tagged_rows(spec) == 0


def test_rows_probed_past_a_given_back_row_are_still_found(shared: SharedWorkers) -> None:
    # Four slots, all names probe from where their hash says: whichever rows the names
    # take, giving back the others must not hide the kept one behind a free row.
    spec, _clock, first, second = shared.pair(slots=4)
    limits = Limits(rpm=1)
    names = [f"k{n}" for n in range(4)]
    for name in names:
        first.settle(admitted(first.take(first.plan(name, limits, None, None), 0)), 0)
    first.forget(["key:k3"])
    assert _tagged_rows(spec) == 1
    assert isinstance(second.take(second.plan("k3", limits, None, None), 0), Refusal)
    table = spec.open(1)
    assert table.row("key:k3") == first.plan("k3", limits, None, None).subjects[0].row


def test_a_worker_whose_row_was_given_back_by_another_never_writes_into_its_next_owner(
        shared: SharedWorkers) -> None:
    # Worker 0 saw the key "old" deleted and gave its row back, and the row went to
    # "new"; worker 1 has not reloaded yet and still serves "old" from the row it knew.
    _spec, _clock, first, second = shared.pair(slots=1)
    limits = Limits(rpm=3)
    for limiter in (first, second):
        limiter.settle(admitted(limiter.take(limiter.plan("old", limits, None, None), 0)), 0)
    first.forget([])
    admitted(first.take(first.plan("new", limits, None, None), 0))
    # "old" finds its row is another's and no other free: it is counted here alone
    # (what it had left: 1), and "new" is untouched.
    admitted(second.take(second.plan("old", limits, None, None), 0))
    assert isinstance(second.take(second.plan("old", limits, None, None), 0), Refusal)
    assert first.snapshot()["key:new"]["requests"]["remaining"] == 2
    admitted(second.take(second.plan("new", limits, None, None), 0))
    assert first.snapshot()["key:new"]["requests"]["remaining"] == 1


def test_a_worker_whose_row_was_given_back_by_another_claims_one_with_what_it_had(
        shared: SharedWorkers) -> None:
    spec, _clock, first, second = shared.pair()
    limits = Limits(rpm=3)
    for limiter in (first, second):
        limiter.settle(admitted(limiter.take(limiter.plan("old", limits, None, None), 0)), 0)
    first.forget([])
    assert _tagged_rows(spec) == 0
    admitted(second.take(second.plan("old", limits, None, None), 0))
    assert _tagged_rows(spec) == 1
    # The row it claimed holds what it had (3 - 2 - 1): worker 0, seeing the key again
    # (it was not deleted after all), finds the minute spent.
    assert isinstance(first.take(first.plan("old", limits, None, None), 0), Refusal)


def test_a_name_is_looked_for_within_a_bounded_number_of_rows(
        shared: SharedWorkers, caplog: pytest.LogCaptureFixture) -> None:
    # The table was scanned whole, holding the server-wide lock, for each new name once
    # it was full: 17.5 ms at 16,384 rows. Now a name is only looked for (and placed)
    # within PROBES rows of where its hash puts it.
    spec = shared.table(slots=4 * PROBES)
    table = spec.open(0)
    home = (int(tag_of("key:new")) - 1) % spec.slots
    for probe in range(PROBES):  # taken by other names (tags no name has: 1 to 64)
        table.cells[(home + probe) % spec.slots * spec.stride] = float(probe + 1)
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        assert table.row("key:new") is None  # the free rows further on are not looked at
    assert "the shared rate-limit table is full" in caplog.text
    assert _tagged_rows(spec) == PROBES
    table.cells[(home + PROBES - 1) % spec.slots * spec.stride] = -1.0  # given back
    assert table.row("key:new") == (home + PROBES - 1) % spec.slots * spec.stride


def test_a_raised_limit_keeps_what_was_left_shared_as_unshared(shared: SharedWorkers) -> None:
    # Unshared, a raised limit keeps what the old one had refilled (10 after an idle
    # hour at RPM 10, and the 990 raised); shared, the idle time was refilled at the new
    # rate (1000).
    def remaining_after_raise(limiter_of: Callable[[Clock], RateLimiter]) -> str:
        clock = Clock()
        limiter = limiter_of(clock)
        for _ in range(10):
            admitted(limiter.take(limiter.plan("k", Limits(rpm=10), None, None), 0))
        clock.now += 3600.0
        result = admitted(limiter.take(limiter.plan("k", Limits(rpm=1000), None, None), 0))
        return result.headers["x-ratelimit-remaining-requests"]

    spec = shared.table()
    unshared = remaining_after_raise(RateLimiter)
    shared = remaining_after_raise(lambda clock: shared.limiter(spec, 0, clock))
    assert shared == unshared, (shared, unshared)


@pytest.mark.parametrize("change", [
    (Limits(rpm=10), Limits(rpm=1000), 30.0),  # raised, half a minute after the last
    (Limits(rpm=1000), Limits(rpm=10), 0.3),  # lowered
    (Limits(rpm=10), Limits(rpm=10, tpm=5000), 12.0),  # another limit added
])
def test_a_changed_limit_leaves_the_same_allowance_shared_and_unshared(
        shared: SharedWorkers, change: tuple[Limits, Limits, float]) -> None:
    before, after, idle = change

    def run(limiter_of: Callable[[Clock], RateLimiter]) -> list[dict[str, str] | str]:
        clock = Clock()
        limiter = limiter_of(clock)
        for _ in range(10):
            admitted(limiter.take(limiter.plan("k", before, None, None), 1))
        clock.now += idle
        seen: list[dict[str, str] | str] = []
        for _ in range(12):
            result = limiter.take(limiter.plan("k", after, None, None), 1)
            seen.append(result.headers if not isinstance(result, Refusal) else result.kind)
            clock.now += 0.5
        return seen

    spec = shared.table()
    assert run(lambda clock: shared.limiter(spec, 0, clock)) == run(RateLimiter)


def test_a_worker_with_a_clock_behind_never_moves_a_stamp_back(spec: SharedLimits, shared: SharedWorkers) -> None:
    # Worker 1 reads a clock 30 s behind worker 0's. Were the stamp it writes taken as
    # is, worker 0's next take would refill those 30 s again (5 more requests of 10).
    ahead, behind = Clock(1030.0), Clock(1000.0)
    first, second = shared.limiter(spec, 0, ahead), shared.limiter(spec, 1, behind)
    limits = Limits(rpm=10)
    for _ in range(9):
        admitted(first.take(first.plan("k", limits, None, None), 0))
    admitted(second.take(second.plan("k", limits, None, None), 0))
    assert isinstance(first.take(first.plan("k", limits, None, None), 0), Refusal)


# -- the tables of parents killed before they removed theirs ---------------------------

def test_the_table_of_a_killed_parent_is_removed_at_the_next_start(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from azure_openai_proxy.governance.sharedlimits import SharedLimits\n"
        "SharedLimits.create(workers=2, slots=64, directory=sys.argv[1])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=False,
                            timeout=60)
    assert killed.returncode == -9
    assert len(os.listdir(tmp_path)) == 1  # the killed parent's table
    following = SharedLimits.create(workers=2, slots=64, directory=str(tmp_path))
    following.remove()
    assert os.listdir(tmp_path) == [], "a killed parent's table is never removed"


def test_a_running_servers_table_is_never_swept(tmp_path: Path) -> None:
    running = SharedLimits.create(workers=2, slots=4, directory=str(tmp_path))
    try:
        sweep(str(tmp_path))
        assert Path(running.path).exists()
    finally:
        running.remove()


def _pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid").rpartition("[")[2].rstrip("]")


def test_a_table_named_after_a_reused_pid_is_swept(tmp_path: Path) -> None:
    # Our own pid, but a start time that is not ours: that parent died and the pid was
    # given to this process since.
    stale = tmp_path / f"azure-openai-proxy-limits-{_pid_namespace()}-{os.getpid()}-1-abcd"
    other = tmp_path / "someone-elses-file"
    stale.write_bytes(b"")
    other.write_bytes(b"")
    sweep(str(tmp_path))
    assert not stale.exists() and other.exists()


def test_a_table_of_another_pid_namespace_is_never_swept(tmp_path: Path) -> None:
    # Another container sharing /dev/shm: its pids are not ours to look up.
    theirs = tmp_path / f"azure-openai-proxy-limits-1{_pid_namespace()}-{os.getpid()}-1-abcd"
    theirs.write_bytes(b"")
    sweep(str(tmp_path))
    assert theirs.exists()


def test_tags_are_where_probing_starts() -> None:
    assert tag_of("key:a") != tag_of("key:b") and tag_of("key:a") == tag_of("key:a")
    assert 0 < tag_of("key:a") <= 2.0**52


def test_a_limit_changed_on_a_row_given_back_claims_a_row_anew(shared: SharedWorkers) -> None:
    spec, _clock, first, second = shared.pair()
    for limiter in (first, second):
        limiter.settle(admitted(limiter.take(limiter.plan("k", Limits(rpm=3), None, None), 0)), 0)
    first.forget([])  # deleted, as worker 0 saw it; worker 1 then sees a new limit
    lower = Limits(rpm=1)
    admitted(second.take(second.plan("k", lower, None, None), 0))
    assert _tagged_rows(spec) == 1
    assert isinstance(first.take(first.plan("k", lower, None, None), 0), Refusal)


def test_a_key_whose_limits_are_removed_gives_its_row_back(spec: SharedLimits, shared: SharedWorkers) -> None:
    clock = Clock()
    first = shared.limiter(spec, 0, clock)
    held = admitted(first.take(first.plan("k", Limits(rpm=5), None, None), 0))
    first.settle(admitted(first.take(first.plan("k", Limits(), None, None), 0)), 0)
    assert _tagged_rows(spec) == 1  # a request is in flight in it
    first.settle(held, 0)
    first.settle(admitted(first.take(first.plan("k", Limits(rpm=6), None, None), 0)), 0)
    admitted(first.take(first.plan("k", Limits(), None, None), 0))
    assert _tagged_rows(spec) == 0
    admitted(first.take(first.plan("k", Limits(rpm=1), None, None), 0))
    assert _tagged_rows(spec) == 1
    second = shared.limiter(spec, 1, clock)
    assert isinstance(second.take(second.plan("k", Limits(rpm=1), None, None), 0), Refusal)


def test_a_row_idle_for_two_minutes_goes_to_a_new_name_when_none_is_free(
        shared: SharedWorkers) -> None:
    # Rows of keys no longer used (or of a worker that died, which no `forget` frees)
    # would fill the table for good; a row idle long enough holds full buckets and
    # nothing in flight, so a new name may take it, and its owner claims one anew.
    spec, clock, first, second = shared.pair(slots=4)
    limits = Limits(rpm=1)
    for n in range(4):
        first.settle(admitted(first.take(first.plan(f"k{n}", limits, None, None), 0)), 0)
    clock.now += IDLE_SECONDS - 1  # "k0" is used again (its minute of 2): it stays
    for _ in range(2):
        first.settle(admitted(first.take(first.plan("k0", Limits(rpm=2), None, None), 0)),
                     0)
    clock.now += 2
    admitted(second.take(second.plan("new", limits, None, None), 0))
    assert isinstance(first.take(first.plan("new", limits, None, None), 0), Refusal)
    assert isinstance(second.take(second.plan("k0", Limits(rpm=2), None, None), 0),
                      Refusal), "k0's row was taken while it was in use"
    assert _tagged_rows(spec) == 4


def test_a_killed_parents_table_in_the_temp_dir_is_swept_by_one_made_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Failed before: only the directory the new table went to (/dev/shm) was swept, so a
    # table left in the temp dir (its parent had fallen back there) stayed for good.
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the fallback went
    stale = tmp_path / f"azure-openai-proxy-limits-{_pid_namespace()}-{os.getpid()}-1-abcd"
    stale.write_bytes(b"")
    made = SharedLimits.create(workers=2, slots=4)
    made.remove()
    assert Path(made.path).parent == Path("/dev/shm")
    assert not stale.exists()
