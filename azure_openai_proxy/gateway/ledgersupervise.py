"""The journal child's supervision, for the worker's side of the journal writer
(`ledgerjournal.py`): the child started, poked, counted when it fails, started again when
it dies (backoff up to `_RESTART_MOST`), and given up after `_CRASH_LOOP` deaths in a row
with records waiting for it (the worker's thread then takes the journal over:
`JournalLedgerWriter._take_over`). A death while the journal was all acknowledged (an idle
gateway's child killed by the OOM killer or an operator) is no crash loop: it is started
again and not counted. A worker that took over tries a child again `_RETRY_FIRST`
seconds later, twice as long after each take-over, at most `_RETRY_MOST`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from azure_openai_proxy.gateway.journalfiles import Position, read_ack

__all__ = ["ChildSupervision"]

log = logging.getLogger("azure_openai_proxy")

_RESTART_MOST = 30.0  # seconds between restarts of a child that keeps dying, at most
# Deaths of the child in a row, its acknowledgement not moving between them: a crash
# loop (a child that cannot run here); the worker then writes its records itself.
_CRASH_LOOP = 3
# After a take-over, a child tried again this long after it (a crash loop's cause, such
# as a full disk, an interpreter being upgraded or memory short for a while, may pass),
# doubled at each take-over in a row: a child that cannot run costs one start (~0.3 s of
# CPU) and three deaths per try, with the records in the journal meanwhile.
_RETRY_FIRST = 120.0
_RETRY_MOST = 3600.0


class ChildSupervision:
    """The child's side of `JournalLedgerWriter` (its base: the state is set there)."""

    database: Path
    prefix: str
    failures: int
    fallbacks: int
    restarts: int
    _busy_ms: int
    _lock_fd: int
    _child: subprocess.Popen[bytes] | None
    _restart_at: float
    _deaths: int
    _ack_seen: Position
    _number: int
    _size: int
    _retry_at: float  # (taken over) when a child is tried again
    _takeovers: int

    def _take_over(self) -> None:
        raise NotImplementedError

    @property
    def child_pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def child_alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def _spawn(self) -> None:
        """Raises OSError if the child cannot be started."""
        self._child = subprocess.Popen(
            [sys.executable, "-m", "azure_openai_proxy.gateway.journalchild", self.prefix,
             str(self.database), str(self._busy_ms), str(self._lock_fd)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(self._lock_fd,),
            bufsize=0)
        assert self._child.stdin is not None and self._child.stdout is not None
        # A poke never waits: a child stopped or stuck does not stop this thread when
        # the pipe is full (the child reads the journal, not the pokes).
        os.set_blocking(self._child.stdin.fileno(), False)
        os.set_blocking(self._child.stdout.fileno(), False)

    def _count_failures(self) -> None:
        """The child's database failures (a byte each on its standard output) counted in
        `failures`, as the thread writer's own are."""
        child = self._child
        if child is None or child.stdout is None:
            return
        with contextlib.suppress(OSError, ValueError):  # nothing there, or closed
            while data := os.read(child.stdout.fileno(), 65536):
                self.failures += len(data)

    def _supervise(self) -> None:
        self._count_failures()
        child = self._child
        if child is not None and child.poll() is None:
            return
        now = time.monotonic()
        if now < self._restart_at:
            return
        if child is not None:
            ack = read_ack(self.prefix)
            if not self._waited_for(ack):
                self._deaths = 0  # nothing was waiting for it: no crash loop
            else:
                self._deaths = self._deaths + 1 if ack == self._ack_seen else 1
            self._ack_seen = ack
            self._ended(child)
            if self._given_up(f"ended (status {child.returncode})"):
                return
            self.restarts += 1
        self._restart_at = now + min(_RESTART_MOST, 0.5 * 2 ** min(self.restarts, 6))
        try:
            self._spawn()
        except OSError as exc:
            self._stop_child()  # (one started whose pipes could not be set up)
            self._deaths += self._waited_for(read_ack(self.prefix))
            self._given_up(f"could not be started ({exc})")

    def _waited_for(self, ack: Position) -> bool:
        """Lines appended past the child's acknowledgement (`ack`): it had work."""
        return ack < (self._number, self._size)

    def _given_up(self, what: str) -> bool:
        """The child dead `_CRASH_LOOP` times in a row: the journal taken over (True)."""
        if self._deaths < _CRASH_LOOP:
            log.error("usage ledger: the journal's writer %s; tried again", what)
            return False
        self._takeovers += 1
        wait = min(_RETRY_MOST, _RETRY_FIRST * 2 ** (self._takeovers - 1))
        log.error("usage ledger: the journal's writer %s, %d times in a row with records "
                  "waiting; this worker writes its journal itself, and tries a writer again "
                  "in %.0f s", what, self._deaths, wait)
        self._take_over()
        self._retry_at = time.monotonic() + wait
        self.fallbacks += 1
        return True

    def _retried(self) -> bool:
        """(Taken over.) Time to try a child again: True, the crash loop's count anew
        (the child started by the next `_supervise`, resuming at the acknowledgement)."""
        if time.monotonic() < self._retry_at:
            return False
        log.info("usage ledger: trying the journal's writer again after a take-over")
        self._deaths = 0
        self._restart_at = 0.0
        return True

    def _stop_child(self) -> None:
        child = self._child
        if child is not None:
            child.kill()  # (SIGTERM it ignores) what it committed is acknowledged or not
            child.wait()
            self._ended(child, failed=False)  # (stopped, not failed)

    def _ended(self, child: subprocess.Popen[bytes] | None, *, failed: bool = True) -> None:
        """A child that ended: a failure (`failures` only goes up: a scrape reads it), with
        those it reported; its pipes closed."""
        if child is None:
            return
        self._count_failures()
        self.failures += failed
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
        self._child = None

    def _poke(self) -> None:
        """Wake the child now (else it looks every second: journalchild._POLL)."""
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(OSError, ValueError):  # full, or the child gone
                os.write(child.stdin.fileno(), b".")
