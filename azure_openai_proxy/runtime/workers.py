"""The parent's side of `--workers N`: the port checked before any worker starts, the
tables the workers share, and waiting for the workers (zeroing a dead one's requests in
flight and budget holds)."""

from __future__ import annotations

import collections
import errno
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.resource_tracker
import os
import signal
import threading
import time
from collections.abc import Callable, MutableSequence, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import TYPE_CHECKING, TypeVar

from azure_openai_proxy.governance.sharedcontext import context_table
from azure_openai_proxy.governance.sharedholds import ExitedColumns, holds_table
from azure_openai_proxy.governance.sharedlimits import SharedLimits, SharedTable
from azure_openai_proxy.http.accept import listening_sockets
from azure_openai_proxy.runtime.orphans import adopts_orphans, reap_orphans
from azure_openai_proxy.runtime.watch import ConfigWatcher, Signature, signature
from azure_openai_proxy.settings import Settings

if TYPE_CHECKING:
    from azure_openai_proxy.runtime.runner import SettingsSource

__all__ = ["CRASH_PAUSE", "CRASH_PAUSE_MAX", "EARLY_EXIT", "REPLACE_LIMIT", "REPLACE_WINDOW",
           "STOPS", "LastLoaded", "Loaded", "Replacements", "SharedTables", "exit_code",
           "port_refusal", "run_workers", "supervise"]

log = logging.getLogger("azure_openai_proxy")
_T = TypeVar("_T")


def port_refusal(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (None: it can), found before any worker
    starts. The workers bind with SO_REUSEPORT, which the kernel grants beside any
    listener of the same user that set it too: a second server with workers on a taken
    port would start, and clients would be spread over both. This bind sets only
    SO_REUSEADDR, which is refused while anything listens there."""
    if port == 0:
        return None  # each worker gets a port of its own
    try:
        sockets = listening_sockets(host or None, port)
    except OSError as exc:  # a name that does not resolve, an address not this host's...
        taken = (" (another program, or another azure-openai-proxy, listens there)"
                 if exc.errno == errno.EADDRINUSE else "")
        return f"cannot listen on {host or '*'}:{port}: {exc.strerror or exc}{taken}"
    for sock in sockets:
        sock.close()
    return None


@dataclass(frozen=True)
class Loaded:
    """Settings, and the config file's signature taken just before they were read: a
    change of the file after it is one `--watch-config` reloads."""

    settings: Settings
    signature: Signature


class LastLoaded:
    """The parent's record of the configuration its workers serve: the start's, then
    each one a reload (SIGHUP, `--watch-config`) loaded, as the workers load it at the
    same moment. A replacement serves it (not the start's, nor a file that no longer
    loads, which its siblings refused)."""

    def __init__(self, start: Loaded, path: str | None, load: Callable[[], Settings]) -> None:
        self.current = start
        self._path = path
        self._load = load

    def reread(self) -> None:
        """The file (and environment) read again; kept when it loads, as a worker's
        reload keeps it (a bad one is logged by each worker). Called in a signal
        handler: nothing it raises may end the parent's supervision."""
        seen = signature(self._path) if self._path else None
        try:
            self.current = Loaded(self._load(), seen)
        except Exception:  # ConfigError, or a fault: the parent supervises on
            return

    def watch(self, changed: Callable[[], None], interval: float = 2.0) -> Callable[[], None]:
        """`changed()` at each change of the file (`--watch-config`), polled in a thread;
        the function returned stops it. The parent's is a SIGHUP to itself: it passes
        the reload on to every worker and rereads, as for an operator's; the workers do
        not watch the file themselves (each watching on its own clock, one could see a change the parent
        missed, replaced at once by a file that does not load: a replacement then served
        an older configuration than its siblings)."""
        if not self._path:
            return lambda: None
        watcher = ConfigWatcher(self._path, changed, interval, self.current.signature)
        stopped = threading.Event()

        def poll() -> None:
            while not stopped.wait(interval):
                watcher.check()

        threading.Thread(target=poll, name="config-watch", daemon=True).start()
        return stopped.set


@dataclass(frozen=True)
class SharedTables:
    """The tables the workers of one server share (`--workers N` with governance): the
    limits', the budget holds' and the chained contexts'. A value: it pickles to the spawned workers. A table
    that cannot be made (no writable /dev/shm nor temp dir) is None: the gateway serves,
    each worker counting alone what that table would have shared (a warning says so)."""

    limits: SharedLimits | None
    holds: SharedLimits | None
    context: SharedLimits | None = None

    @classmethod
    def create(cls, workers: int, directory: str | None = None) -> SharedTables:
        """`directory`: where to make them (None: /dev/shm, else the temp dir)."""
        return cls(_made(lambda: SharedLimits.create(workers, directory=directory),
                         "rate limits"),
                   _made(lambda: holds_table(workers, directory), "budget holds"),
                   _made(lambda: context_table(workers, directory), "chained contexts"))

    def remove(self) -> None:
        for table in (self.limits, self.holds, self.context):
            if table is not None:
                table.remove()

    def open(self, worker: int) -> tuple[SharedTable | None, SharedTable | None,
                                         SharedTable | None]:
        """Worker `worker`'s mappings of the limits', the holds' and the chained
        contexts' tables (None: that one could not be mapped, and is counted by this
        worker alone)."""
        return (_opened(self.limits, worker, "rate limits"),
                _opened(self.holds, worker, "budget holds"),
                _opened(self.context, worker, "chained contexts"))


def _made(create: Callable[[], SharedLimits], what: str) -> SharedLimits | None:
    try:
        return create()
    except OSError as exc:
        log.warning("cannot make the shared table of %s (%s): each worker process counts "
                    "them alone, so a key may use them once per worker", what, exc)
        return None


def _opened(spec: SharedLimits | None, worker: int, what: str) -> SharedTable | None:
    if spec is None:
        return None
    try:
        return spec.open(worker)
    except OSError as exc:
        log.warning("worker %d cannot map the shared table of %s (%s): it counts them "
                    "alone", worker, what, exc)
        return None


class Replacements:
    """Starts a worker in the place of one that exited (killed: the OOM killer; crashed;
    stopped alone: a SIGTERM sent to it), unless the server is stopping. A crash loop
    (more than `REPLACE_LIMIT` workers exiting within `EARLY_EXIT` seconds of their start,
    in `REPLACE_WINDOW` seconds: a fault each new one meets again) holds the next starts
    back `CRASH_PAUSE` seconds, doubling at each early exit after it up to `CRASH_PAUSE_MAX`,
    with an error logged each time; a worker that served longer and exited (a SIGTERM
    sent to it, the OOM killer) is replaced at once and ends the back-off."""

    def __init__(self, start: Callable[[int], multiprocessing.process.BaseProcess],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._start = start
        self._monotonic = monotonic
        self._deaths: collections.deque[float] = collections.deque()  # early exits
        self._started: dict[int, float] = {}  # worker -> when its process started
        self._pause = 0.0  # the back-off of a crash loop (0: none)
        self.resume_at: float | None = None  # no start before it (a crash loop's pause)
        self.stopping = False  # set by the parent's SIGTERM/SIGINT handler
        self.died: set[int] = set()  # workers dead while not stopping, not replaced
        self.none_left = False  # a crash loop took every worker (supervise gave up)

    def exit_code(self, workers: Sequence[multiprocessing.process.BaseProcess]) -> int:
        """The parent's exit code once `workers` all exited: 0 when each exited 0, or
        was ended by the stop's SIGTERM (a replacement still starting, its handler not
        yet in place); 1 when one was killed (by a SIGTERM too) before the stop, or when
        a crash loop left none (whatever their codes: a service manager restarts on 1)."""
        if self.none_left:
            return 1
        clean = (0, -signal.SIGTERM) if self.stopping else (0,)
        return 0 if all(p.exitcode == 0 or (p.exitcode in clean and index not in self.died)
                        for index, p in enumerate(workers)) else 1

    def begin(self, worker: int) -> multiprocessing.process.BaseProcess:
        """A process for worker number `worker`, started now (the server's first ones)."""
        process = self._start(worker)
        self._started[worker] = self._monotonic()
        return process

    def exited(self, worker: int) -> None:
        """Worker `worker` exited while the server was not stopping: an early exit (one
        started without `begin` counts as one) is a crash loop's once there are too
        many; one that lived longer ends a back-off."""
        now = self._monotonic()
        lived = now - self._started.pop(worker, now)
        if lived >= EARLY_EXIT:
            self._pause, self.resume_at = 0.0, None
            return
        self._deaths.append(now)
        while self._deaths[0] < now - REPLACE_WINDOW:
            self._deaths.popleft()
        if self._pause or len(self._deaths) > REPLACE_LIMIT:
            self._pause = min(self._pause * 2 or CRASH_PAUSE, CRASH_PAUSE_MAX)
            self.resume_at = now + self._pause
            log.error("crash loop: %d workers exited within %g s of their start in the "
                      "last %g s (worker %d after %.1f s): the next is started in %g s",
                      len(self._deaths), EARLY_EXIT, REPLACE_WINDOW, worker, lived,
                      self._pause)

    def held_back(self) -> float | None:
        """Seconds until a crash loop's pause ends (None: starts are not held back)."""
        if self.resume_at is None or self.stopping:
            return None
        left = self.resume_at - self._monotonic()
        return left if left > 0 else None

    def start(self, worker: int) -> multiprocessing.process.BaseProcess | None:
        """A new process for worker number `worker`, started (None: none is, the server
        stopping or a crash loop's pause not over: `held_back`)."""
        if self.stopping or self.held_back() is not None:
            return None
        return self.begin(worker)


REPLACE_LIMIT, REPLACE_WINDOW = 5, 60.0
EARLY_EXIT = 30.0  # seconds: a worker that exits sooner after its start may be crash-looping
CRASH_PAUSE, CRASH_PAUSE_MAX = 30.0, 600.0  # a crash loop's pauses, doubling


def supervise(workers: MutableSequence[multiprocessing.process.BaseProcess],
              shared: SharedLimits | None, holds: SharedLimits | None = None,
              replacements: Replacements | None = None) -> None:
    """Wait for every worker to exit. One that dies (a non-zero exit: killed, crashed)
    leaves its requests in flight counted in the shared limits table: they are zeroed,
    or the keys' parallel limits would stay taken by requests that will never end. The
    budget holds of one that exits, whatever its exit, are zeroed in `holds` once every
    live worker's book has its records (`ExitedColumns`: seconds): nothing else would
    release them. `replacements`: one that exits while the server is not stopping
    (whatever its code: a SIGTERM sent to it alone drains it and exits 0) is replaced (in
    `workers`) once its column of the holds is free."""
    exited = ExitedColumns(holds) if holds is not None else None
    reaps = adopts_orphans()
    running = {process.sentinel: index for index, process in enumerate(workers)}
    dead: set[int] = set()  # to be replaced
    while True:
        # With no worker left, no book is to be read: the exited columns are let go at
        # once (they kept a parent whose workers had all stopped up to MAX_LINGER more).
        due = None if exited is None else _tended(exited.reset_due, not running)
        held = None if replacements is None else replacements.held_back()
        for index in sorted(dead):
            if held is None and (exited is None or not exited.waiting(index)):
                dead.discard(index)
                _replace(workers, index, replacements, running)
        if not running and (not dead or held is not None):  # (none refused is waited for)
            if dead and replacements is not None:  # a crash loop took every worker: exit
                replacements.none_left = True      # 1, for the service manager's restart
                log.error("no worker is left and they crash as they start: the server exits")
            break
        wait = _soonest(None if due is None else min(due, _EXITED_POLL),
                        _EXITED_POLL if dead else None, held, _REAP_EVERY if reaps else None)
        ready = set(multiprocessing.connection.wait(list(running), wait))
        if reaps:
            reap_orphans({process.pid for process in workers if process.pid is not None})
        for index in [running.pop(s) for s in list(running) if s in ready]:
            workers[index].join()
            if exited is not None:
                _tended(exited.exited, index)
            code = workers[index].exitcode
            if code != 0:
                if shared is not None:
                    _tended(shared.reset_worker, index)
                log.warning("worker %d (pid %s) exited with %s; its requests in flight "
                            "are no longer counted (its budget holds once the others have "
                            "read its last records)", index, workers[index].pid, _how(code))
            elif replacements is not None and not replacements.stopping:
                # drained and exited on its own (a SIGTERM sent to it alone): the server
                # served on one worker short for good, and said nothing
                log.warning("worker %d (pid %s) exited with 0 while the server was not "
                            "stopping", index, workers[index].pid)
            if replacements is not None and not replacements.stopping:
                replacements.exited(index)
                dead.add(index)
                replacements.died.add(index)
    if exited is not None:
        _tended(exited.reset_due, True)


def _soonest(*seconds: float | None) -> float | None:
    return min((s for s in seconds if s is not None), default=None)


def _how(code: int | None) -> str:
    """An exit code as the log says it: `-9 (SIGKILL)` for a signal's."""
    if code is None or code >= 0:
        return str(code)
    try:
        return f"{code} ({signal.Signals(-code).name})"
    except ValueError:
        return str(code)


def _replace(workers: MutableSequence[multiprocessing.process.BaseProcess], index: int,
             replacements: Replacements | None, running: dict[int, int]) -> None:
    try:
        process = None if replacements is None else replacements.start(index)
    except OSError as exc:  # no memory or processes left to start one: serve on without
        log.error("worker %d could not be started again: %s", index, exc)
        return
    if process is None:
        return
    log.warning("worker %d (pid %s) replaced by pid %s", index, workers[index].pid, process.pid)
    workers[index] = process
    running[process.sentinel] = index
    if replacements is not None:
        replacements.died.discard(index)
    if replacements is not None and replacements.stopping and process.pid is not None:
        os.kill(process.pid, signal.SIGTERM)  # the stop came while it started


_EXITED_POLL = 1.0  # seconds between looks at the live workers' reads, while one exited
_REAP_EVERY = 5.0  # seconds between looks for exited orphans (orphans.py: PID 1 adopts them)


def _tended(step: Callable[..., _T], *args: object) -> _T | None:
    """`step(*args)` on a shared table; a table gone from its directory (an operator's
    or systemd's clean-up of /dev/shm) is logged, and the other workers are still
    waited for."""
    try:
        return step(*args)
    except OSError as exc:
        log.warning("cannot reset an exited worker's column of a shared table: %s", exc)
        return None


STOPS = {signal.SIGTERM, signal.SIGINT}


def exit_code(stopped_by: int | None, code: int) -> int:
    """The server's exit code: 130 for a stop by SIGINT, as a shell counts a Ctrl-C."""
    return 130 if code == 0 and stopped_by == signal.SIGINT else code


def run_workers(settings: Settings, source: SettingsSource | None,
                shared: SharedTables | None, seen: Signature | EllipsisType,
                worker: Callable[..., int]) -> int:
    """The parent of `--workers N`: starts them (`worker`, in a spawned process), passes
    SIGTERM, SIGINT and SIGHUP on to them, replaces the ones that exit (`Replacements`)
    and waits for them; its exit code."""
    context = multiprocessing.get_context("spawn")
    path = source.config_path if source is not None else None
    if seen is ...:
        seen = signature(path) if path else None
    last = LastLoaded(Loaded(settings, seen), path,
                      source.load if source is not None else lambda: settings)
    live: list[multiprocessing.process.BaseProcess] = []  # the ones a signal is passed to
    stopped_by: list[int] = []  # SIGTERM or SIGINT, once the server stops

    def start(index: int) -> multiprocessing.process.BaseProcess:
        # SIGHUP is held in the new process until it can reload (cli.py), SIGTERM and
        # SIGINT until it can stop (serve_forever: the default actions would kill it,
        # SIGINT with a traceback); here, until it is among the live ones they are
        # passed to.
        # (multiprocessing's resource tracker, started with the first worker, unblocks
        # SIGINT and SIGTERM once it is spawned: started first, it leaves them held)
        multiprocessing.resource_tracker.ensure_running()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, *STOPS})
        try:
            loaded = last.current  # the start's, or what a reload loaded since
            process = context.Process(target=worker, daemon=False, args=(
                settings, source, True, None if shared is None else (shared, index),
                loaded.signature, None if loaded.settings is settings else loaded.settings))
            process.start()
            live[:] = [p for p in live if p.exitcode is None] + [process]
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if last.current is not loaded and process.pid is not None:
            os.kill(process.pid, signal.SIGHUP)  # a reload came as it started
        if stopped_by and process.pid is not None:  # a stop came as it started (before
            os.kill(process.pid, stopped_by[0])     # it was live): it is passed on here
        return process

    replacements = Replacements(start)

    def forward(signum: int, _frame: object) -> None:
        if signum != signal.SIGHUP:
            replacements.stopping = True
            stopped_by.append(signum)
        for process in list(live):
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)
        if signum == signal.SIGHUP:
            last.reread()  # as the workers do now

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    workers: list[multiprocessing.process.BaseProcess] = []
    for index in range(settings.workers):  # (a stop now: the ones started stop)
        if not replacements.stopping:
            workers.append(replacements.begin(index))
    unwatch = (last.watch(lambda: os.kill(os.getpid(), signal.SIGHUP))
               if settings.watch_config else lambda: None)
    # The workers inherited SIGHUP held (cli.py) and let it in once they can reload.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    try:
        if shared is None:
            supervise(workers, None, None, replacements)
        else:
            supervise(workers, shared.limits, shared.holds, replacements)
    finally:
        unwatch()
    return exit_code(stopped_by[0] if stopped_by else None, replacements.exit_code(workers))
