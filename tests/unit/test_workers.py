"""The parent's side of `--workers N` (runtime/workers.py): replacing the workers that
die, and giving up on workers that keep dying."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from azure_openai_proxy.config import ConfigError
from azure_openai_proxy.governance.sharedholds import MAX_LINGER, holds_table
from azure_openai_proxy.runtime.watch import signature
from azure_openai_proxy.runtime.workers import (
    CRASH_PAUSE,
    CRASH_PAUSE_MAX,
    EARLY_EXIT,
    REPLACE_LIMIT,
    REPLACE_WINDOW,
    LastLoaded,
    Loaded,
    Replacements,
    port_refusal,
    supervise,
)
from azure_openai_proxy.settings import Settings
from tests.e2e.pools import pool_settings
from tests.spawn_targets import exit_at_sigterm, exit_with
from tests.waiting import until


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _process(code: int) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=exit_with, args=(code,))
    process.start()
    return process


def _serving() -> multiprocessing.process.BaseProcess:
    """A worker that serves until it is sent a SIGTERM (the server's stop), then exits
    0 (any worker that exits while the server is not stopping is replaced); returned
    once its SIGTERM handler is in place."""
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=exit_at_sigterm, args=(ready,))
    process.start()
    assert ready.wait(30)
    return process


def _stop(replacements: Replacements, *workers: multiprocessing.process.BaseProcess) -> None:
    """The parent's SIGTERM handler: stopping, and the signal passed on."""
    replacements.stopping = True
    for process in workers:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)


def _crash_loop(replacements: Replacements, clock: Clock, worker: int = 1) -> None:
    """REPLACE_LIMIT + 1 workers started and exited a second later, within the window."""
    for _ in range(REPLACE_LIMIT + 1):
        assert replacements.start(worker) is not None
        clock.now += 1
        replacements.exited(worker)


def _fake(started: list[int]) -> Callable[[int], multiprocessing.process.BaseProcess]:
    def start(worker: int) -> multiprocessing.process.BaseProcess:
        started.append(worker)
        return multiprocessing.process.BaseProcess()

    return start


def test_a_crash_loop_holds_the_next_starts_back_doubling_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    clock, started = Clock(), []
    replacements = Replacements(_fake(started), clock)
    with caplog.at_level(logging.ERROR, logger="azure_openai_proxy"):
        _crash_loop(replacements, clock)
    assert started == [1] * (REPLACE_LIMIT + 1)
    assert replacements.start(0) is None and replacements.held_back() == CRASH_PAUSE
    assert (f"crash loop: {REPLACE_LIMIT + 1} workers exited within {EARLY_EXIT:g} s of their "
            f"start in the last {REPLACE_WINDOW:g} s (worker 1 after 1.0 s): the next is "
            f"started in {CRASH_PAUSE:g} s") in caplog.text
    clock.now += CRASH_PAUSE  # the pause is over: one more try (it used to be none, ever)
    assert replacements.held_back() is None and replacements.start(0) is not None
    clock.now += 1
    replacements.exited(0)  # crashed again: at once the next pause, twice as long
    assert replacements.held_back() == 2 * CRASH_PAUSE
    for _ in range(10):
        clock.now += CRASH_PAUSE_MAX
        assert replacements.start(0) is not None
        replacements.exited(0)
    assert replacements.held_back() == CRASH_PAUSE_MAX
    clock.now += CRASH_PAUSE_MAX
    assert replacements.start(0) is not None
    clock.now += EARLY_EXIT  # this one served: its exit ends the back-off
    replacements.exited(0)
    assert replacements.held_back() is None and replacements.start(0) is not None


def test_workers_that_served_and_were_stopped_one_by_one_are_each_replaced() -> None:
    """SIGTERMs sent to single workers that had served (a rolling restart by hand, the
    OOM killer): every exit counted toward the limit, and the sixth within a minute
    left its worker's place empty for good."""
    clock, started = Clock(), []
    replacements = Replacements(_fake(started), clock)
    workers = range(2 * REPLACE_LIMIT)
    for worker in workers:
        replacements.begin(worker)
    clock.now += 3600  # they served an hour; then one a second is sent a SIGTERM
    for worker in workers:
        clock.now += 1
        replacements.exited(worker)
        assert replacements.start(worker) is not None, worker
    assert started == [*workers, *workers] and replacements.held_back() is None


def test_early_exits_spread_out_are_each_replaced() -> None:
    clock, started = Clock(), []
    replacements = Replacements(_fake(started), clock)
    for _ in range(3 * REPLACE_LIMIT):
        assert replacements.start(0) is not None
        clock.now += REPLACE_WINDOW / REPLACE_LIMIT + 1
        replacements.exited(0)
    assert len(started) == 3 * REPLACE_LIMIT and replacements.held_back() is None


def test_nothing_is_replaced_once_the_server_stops() -> None:
    replacements = Replacements(lambda worker: multiprocessing.process.BaseProcess(), Clock())
    replacements.stopping = True
    assert replacements.start(0) is None


def test_a_killed_worker_is_replaced_in_its_place_and_a_clean_exit_at_the_stop_is_not(
        ) -> None:
    """Worker 1 is killed; the server stops as its replacement starts: the replacement
    and worker 0 exit cleanly and supervise returns with the replacement in worker 1's
    place (the exit code reads from it), nothing more replaced."""
    first = _serving()
    workers = [first, _process(-signal.SIGKILL)]
    killed, started = workers[1], []

    def start(worker: int) -> multiprocessing.process.BaseProcess:
        started.append(worker)
        process = _serving()
        _stop(replacements, first, process)  # the operator's stop, once it started
        return process

    replacements = Replacements(start)
    supervise(workers, None, None, replacements)
    assert started == [1] and workers[0] is first
    assert workers[1] is not killed and killed.exitcode == -signal.SIGKILL
    assert [p.exitcode for p in workers] == [0, 0]
    assert replacements.exit_code(workers) == 0


def test_a_worker_that_exits_cleanly_on_its_own_is_replaced_until_a_crash_loop(
        caplog: pytest.LogCaptureFixture) -> None:
    """A SIGTERM sent to one worker alone: it drains and exits 0. The parent, not
    stopping, neither replaced it nor said so (the server served one worker short for
    good); it is replaced now, as a killed one is, until they exit as they start."""
    started: list[int] = []

    def start(worker: int) -> multiprocessing.process.BaseProcess:
        started.append(worker)
        return _process(0) if len(started) > REPLACE_LIMIT - 2 else \
            multiprocessing.process.BaseProcess()

    replacements = Replacements(start)
    for _ in range(REPLACE_LIMIT - 2):  # early exits a moment ago (the test spawns fewer)
        replacements.start(1)
        replacements.exited(1)
    workers = [_process(0)]
    first = workers[0].pid
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        supervise(workers, None, None, replacements)
    assert started == [1] * (REPLACE_LIMIT - 2) + [0, 0]
    assert replacements.held_back() is not None and 0 in replacements.died
    exits = [r.getMessage() for r in caplog.records if "exited with 0 while" in r.getMessage()]
    assert len(exits) == 3 and exits[0] == (f"worker 0 (pid {first}) exited with 0 while "
                                            "the server was not stopping")
    assert caplog.text.count("replaced by pid") == 2 and "crash loop" in caplog.text
    assert "no worker is left" in caplog.text  # (the parent exits: nothing serves)
    # exit 1, as the README says, for a service manager's restart: each of these exits
    # was 0, and the parent's was 0 too (systemd's Restart=on-failure left it down)
    assert replacements.exit_code(workers) == 1


def test_a_killed_worker_is_logged_with_its_signal(caplog: pytest.LogCaptureFixture) -> None:
    workers = [_process(-signal.SIGKILL)]
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        supervise(workers, None, None, None)
    assert f"worker 0 (pid {workers[0].pid}) exited with -9 (SIGKILL);" in caplog.text


def test_a_replacement_that_cannot_be_started_leaves_the_others_served(
        caplog: pytest.LogCaptureFixture) -> None:
    def refused(worker: int) -> multiprocessing.process.BaseProcess:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork's EAGAIN

    workers = [_process(0), _process(-signal.SIGKILL)]
    with caplog.at_level(logging.ERROR, logger="azure_openai_proxy"):
        supervise(workers, None, None, Replacements(refused))
    assert [p.exitcode for p in workers] == [0, -signal.SIGKILL]
    assert "worker 1 could not be started again" in caplog.text


def test_when_every_worker_died_and_none_is_replaced_the_wait_ends() -> None:
    replacements = Replacements(lambda worker: _process(0))
    replacements.resume_at = time.monotonic() + 600  # workers kept dying before these
    workers = [_process(-signal.SIGKILL), _process(-signal.SIGKILL)]
    supervise(workers, None, None, replacements)  # it used to wait for nothing, forever
    assert [p.exitcode for p in workers] == [-signal.SIGKILL] * 2


def test_the_parent_keeps_the_last_config_that_loaded(tmp_path: Path) -> None:
    """What a replacement is started on: a file that no longer loads, or a load that
    fails some other way (in the parent's SIGHUP handler), leaves the last good one."""
    path = tmp_path / "config.yaml"
    path.write_text("a\n")
    first, second = (pool_settings("http://127.0.0.1:9", [(name, {})]) for name in "ab")
    loads: list[Callable[[], Settings]] = [lambda: second, _refused, _undecodable]
    last = LastLoaded(Loaded(first, None), str(path), lambda: loads.pop(0)())
    last.reread()
    assert last.current == Loaded(second, signature(str(path)))
    for _ in range(2):
        last.reread()
        assert last.current.settings is second


def _refused() -> Settings:
    raise ConfigError("models.gpt-4o must be a non-empty list of deployments")


def _undecodable() -> Settings:
    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid"])
def test_an_address_that_cannot_be_listened_on_is_not_blamed_on_a_listener(host: str) -> None:
    """Not this host's address, a name that does not resolve: the refusal named an
    imagined program listening there."""
    refusal = port_refusal(host, 8080)
    assert refusal is not None and refusal.startswith(f"cannot listen on {host}:8080: ")
    assert "listens there" not in refusal


def test_a_taken_port_names_the_listener() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        refusal = port_refusal("127.0.0.1", port)
    assert refusal is not None and "Address already in use" in refusal
    assert "another azure-openai-proxy, listens there" in refusal


def test_the_parents_watch_calls_its_function_once_per_change_and_says_it_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`--watch-config` with workers: the parent alone watches the file (its SIGHUP to
    itself reloads every worker, and its own record, at once); the line saying a change
    is being reloaded is its one line, not one per worker."""
    path = tmp_path / "config.yaml"
    path.write_text("a\n")
    first = pool_settings("http://127.0.0.1:9", [("a", {})])
    last = LastLoaded(Loaded(first, signature(str(path))), str(path), lambda: first)
    changes: list[int] = []
    with caplog.at_level(logging.INFO, "azure_openai_proxy"):
        stop = last.watch(lambda: changes.append(1), interval=0.02)
        try:
            path.write_text("b, longer\n")
            until(lambda: changes, 10, "the change was never seen")
            path.write_text("c, longer still\n")
            until(lambda: len(changes) == 2, 10, "the second change was never seen")
        finally:
            stop()
    assert changes == [1, 1]
    assert [r.getMessage() for r in caplog.records if "reloading" in r.getMessage()] == [
        f"config file {path} changed; reloading"] * 2


def test_a_worker_sigtermed_before_the_stop_and_not_replaced_is_no_clean_stop() -> None:
    """leftmix counted every -SIGTERM exit as the stop's own once the server stopped: a
    worker someone else's SIGTERM killed earlier (its replacement given up) was hidden,
    the parent exiting 0."""
    replacements = Replacements(lambda worker: _process(0))
    replacements.resume_at = time.monotonic() + 600  # a crash loop's pause
    workers = [_process(0), _process(-signal.SIGTERM)]
    supervise(workers, None, None, replacements)
    replacements.stopping = True  # the operator's stop, after
    assert [p.exitcode for p in workers] == [0, -signal.SIGTERM]
    assert replacements.exit_code(workers) == 1


def test_a_replacement_the_stops_sigterm_ended_as_it_started_is_a_clean_stop() -> None:
    replacements: Replacements
    first = _serving()

    def start(worker: int) -> multiprocessing.process.BaseProcess:
        _stop(replacements, first)  # the stop came while it started (worker 0 drains)
        return _process(-signal.SIGTERM)

    replacements = Replacements(start)
    workers = [first, _process(-signal.SIGKILL)]
    supervise(workers, None, None, replacements)
    assert [p.exitcode for p in workers] == [0, -signal.SIGTERM]
    assert replacements.exit_code(workers) == 0


def test_a_worker_that_exited_just_before_the_stop_does_not_keep_the_parent_up(
        tmp_path: Path) -> None:
    """Worker 1 exits on its own; the stop comes before any live worker read the books.
    Its budget holds' column was kept for a reader that would never come: once every
    worker was gone, the parent still waited out MAX_LINGER (10 s) before it exited."""
    holds = holds_table(2, str(tmp_path))
    try:
        first = _serving()
        workers = [first, _process(0)]
        replacements = Replacements(lambda worker: _process(0))
        stopped_at: list[float] = []

        def stop_once_its_exit_is_seen() -> None:
            until(lambda: 1 in replacements.died, 60, "the exit was never seen")
            stopped_at.append(time.monotonic())
            _stop(replacements, first)

        stopper = threading.Thread(target=stop_once_its_exit_is_seen)
        stopper.start()
        supervise(workers, None, holds, replacements)
        took = time.monotonic() - stopped_at[0]
        stopper.join(10)
    finally:
        holds.remove()
    assert workers == [first, workers[1]] and [p.exitcode for p in workers] == [0, 0]
    assert took < MAX_LINGER / 2, f"the parent stayed {took:.1f} s after the stop"
