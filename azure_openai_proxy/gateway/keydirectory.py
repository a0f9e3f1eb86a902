"""Every virtual key in memory, kept in step with the store: how the gateway
authenticates a virtual key without touching the database on the request path.

`KeyDirectory.authenticate(secret)` is a dict lookup of the secret's hash, done once per
secret and key version: the caller it stands for is then remembered by the secret
itself (a bounded map emptied at every reload, holding only secrets that opened a key,
each until its key expires or its rotation grace ends), so a request with a known key
costs one dict look-up and a clock read, not a sha256 and a hex string. A background
task asks the store for its change counter every `poll_seconds` (0.5 s) and, when it
moved, reads the keys and teams changed since its last read from the store's change
log (`KeyStore.changes_since`) and applies them (`gateway/keyindex.py`), so a key
revoked through the CLI, the admin API or another worker stops working within a second;
an admin API write is read at once. All keys and teams are read at start, after the
database failed, when the log no longer reaches back to the last read (`force` too),
and when the database is another one than the one read: a file swapped in at its path
(another inode, or the file removed and put back: opened afresh; while the replaced
file's -wal, which SQLite leaves and would apply to the new file, is beside it, the new
file is read as it is on disk and nothing is written: `_read_replaced`, and
store/replaced.py), or another database restored into the file (the
log's change at the position read has not the mark read there), whatever its counter.
Every database call runs on one worker thread of its own: the event loop never waits
on SQLite.

At start the gateway waits up to `_FIRST_LOAD_SECONDS` for the database to answer (a
locked or unreachable one must not hold the start), then for the keys to be read and
indexed, however many (100,000 keys: ~1-2 s; a cut short first load answered every
virtual key 401 until it ended); a line says how many were loaded, and how long it took.
A stop meanwhile (`abandon_start`: SIGTERM, SIGINT) ends the wait at once, and `close`
interrupts the read in progress (`sqlite3.Connection.interrupt`: a read, nothing is
lost): the worker stops within a second, not when 100,000 keys are read.

When the database is slow, locked or gone, the last keys loaded keep being served (one
warning is logged, and one more when it is back): a database problem never turns into a
401 or a 500 for a client with a known key.

Governance is on when the settings name a `database` or an `admin_key`
(`Settings.governance_enabled`); otherwise no directory exists, no file is opened or
created, and the request path pays one `is None` check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from azure_openai_proxy.auth import (
    Caller,
    ClientKeyring,
    Decided,
    bearer_token,
    presented_beside,
)
from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keyindex import KeyIndex
from azure_openai_proxy.governance.budget import budget_applies
from azure_openai_proxy.governance.keys import SECRET_PREFIX, key_state, presented_hash_valid
from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyChanges, KeyStore
from azure_openai_proxy.store.replaced import REPLACED_IN_USE, FileWatch, ReplacedInUse
from azure_openai_proxy.store.sqlite import connect

__all__ = ["KeyDirectory"]

log = logging.getLogger("azure_openai_proxy")

T = TypeVar("T")

_INVALID = "Incorrect API key provided for this gateway."
_REASONS = {
    "expired": "This API key has expired.",
    "blocked": "This API key has been blocked.",
    "team_blocked": "This API key's team has been blocked.",
}
_FIRST_LOAD_SECONDS = 5.0  # for the database's first answer (then for the keys: see above)
_KEYS_READ_SECONDS = 120.0  # then for its keys: a bound for a hang only (100,000: 1-2 s)
_KNOWN_LIMIT = 4096  # secrets remembered between reloads (beyond it: hashed again)
_FOREVER = float("inf")
_BEARER_PREFIX = len("Bearer ")  # the scheme and one space before a remembered secret


class KeyDirectory:
    """The keys of one database, for one worker: loaded at start-up, refreshed on change."""

    def __init__(self, path: Path, *, poll_seconds: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aop-keystore")
        self._store: KeyStore | None = None
        # The store's connection, for `_interrupt` from the loop (opening included).
        self._connection: sqlite3.Connection | None = None
        self._abandoned = asyncio.Event()  # a stop came while it started (`abandon_start`)
        self._closing = False
        self._watch = FileWatch(path)  # the file opened, and its -wal (store/replaced.py)
        self._swapped = False  # another file at `path` was opened in place of the one read
        # The replacing file's state when last read as it is on disk (`_read_replaced`).
        self._replaced_read: tuple[int, ...] | None = None
        self._answered: asyncio.Event | None = None  # the start's: the database answered
        self._index = KeyIndex()
        self._by_hash = self._index.by_hash  # (the same dict, changed in place)
        # secret -> (the caller it opened, until when): `authenticate`'s fast path.
        self._known: BoundedCache[str, tuple[Caller, float]] = BoundedCache(_KNOWN_LIMIT)
        # An `Authorization` header's whole value -> the same, for a `Bearer <secret>`
        # that opened a key: `authenticate_headers`' fast path (no parsing of the header).
        self._bearers: BoundedCache[str, tuple[Caller, float]] = BoundedCache(_KNOWN_LIMIT)
        self._version: int | None = None
        self._position = 0  # in the store's change log, as of the last read
        self._mark: int | None = None  # the log's change there (`KeyStore.changes_since`)
        self._failing = False
        self._unapplied = False  # a read whose install failed: read whole next (`_applied`)
        # One refresh at a time: two reads of the changes since the same position,
        # applied in the other order, would put the older one last.
        self._refreshing = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        # Called after each reload with every key's and team's limits by subject
        # ("key:ID", "team:ID"): the limiter forgets the others, and plans with these.
        self.on_reload: Callable[[Mapping[str, Limits]], None] | None = None

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the keys and start watching for changes. Waits `_FIRST_LOAD_SECONDS` at
        most for the database to answer (a slow, locked or unreachable one must not hold
        the gateway's start: the keys then come with a later poll), then until every
        key is read and indexed."""
        began = time.monotonic()
        answered = self._answered = asyncio.Event()
        loading = asyncio.ensure_future(self.refresh())
        waiting = asyncio.ensure_future(answered.wait())
        stopped = asyncio.ensure_future(self._abandoned.wait())
        try:
            await asyncio.wait((loading, waiting, stopped), timeout=_FIRST_LOAD_SECONDS,
                               return_when=asyncio.FIRST_COMPLETED)
            if answered.is_set() and not stopped.done():  # reading: as long as that takes
                await asyncio.wait((loading, stopped), timeout=_KEYS_READ_SECONDS,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            stopped.cancel()
            self._answered = None
        if self._abandoned.is_set() and not loading.done():
            log.info("key store %s: stopping before its keys were loaded", self.path)
            self._closing = True  # (its read interrupted: not a failure to report)
            self._interrupt()
            return  # no poll: `close` follows
        if not loading.done():
            log.warning("key store %s: its keys are not loaded %.0f s after the start (%s): "
                        "starting without them, virtual keys are refused (401) until they "
                        "are", self.path, time.monotonic() - began,
                        "still reading them" if answered.is_set() else "no answer")
            loading.add_done_callback(lambda _: self._loaded(began, "late: "))
        else:
            self._loaded(began, "")
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _loaded(self, began: float, late: str) -> None:
        """The first load's line (none when it failed: `_refresh` said why)."""
        if not self._failing and self._version is not None:
            log.log(logging.WARNING if late else logging.INFO,
                    "key store %s: %s%d keys and %d teams loaded in %.1f s", self.path, late,
                    self.key_count, len(self._index.teams), time.monotonic() - began)

    def abandon_start(self) -> None:
        """A stop came: `start` returns now, whatever it waits for (the keys' read is
        interrupted: `close` follows)."""
        self._abandoned.set()

    def _interrupt(self) -> None:
        """Interrupt the database call in progress on the database thread, if any (from
        the loop: SQLite's interrupt is safe from another thread); it raises there."""
        connection = self._connection
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.interrupt()

    async def close(self) -> None:
        self._closing = True
        self._interrupt()  # a slow read (a first load) is not waited for at exit
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        store, self._store = self._store, None
        if store is not None:
            self._executor.submit(store.close)
        self._executor.submit(self._watch.release)
        self._executor.shutdown(wait=False)

    # -- the database thread ----------------------------------------------------------

    async def call(self, operation: Callable[[KeyStore], T]) -> T:
        """Run `operation` on the store, on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, operation)

    def _run(self, operation: Callable[[KeyStore], T]) -> T:
        watch = self._watch
        if self._store is not None and watch.replaced():
            # Another file at the path (a backup moved into place), or none: the open
            # connection still reads the one replaced, and would for good. The next
            # refresh reads the new one whole (`_swapped`).
            self._store.close()
            self._store, self._swapped, self._replaced_read = None, True, None
        if self._store is None:
            # While the replaced file's -wal is beside a new one: `_read_replaced`.
            watch.check()
            if self._version is not None and not self.path.exists():
                # The database vanished after it was read: making an empty one here would
                # forget every key. Keep serving the known ones until it is back.
                raise FileNotFoundError(self.path)
            watch.opening()
            # (kept before the store prepares it: a locked database's wait interrupted)
            connection = self._connection = connect(self.path)
            try:
                self._store = KeyStore(connection)
            except BaseException:
                connection.close()
                raise
            watch.opened()
        return operation(self._store)

    # -- refreshing -------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> None:
        """Read what changed if the store changed since the last read (every key and
        team if `force`). A failure keeps the keys known so far."""
        async with self._refreshing:
            await self._refresh(force)

    async def _refresh(self, force: bool) -> None:
        try:
            changes = await self._changes(force)
        except ReplacedInUse:
            await self._read_replaced()
            return
        except Exception as exc:  # sqlite3 errors, a vanished directory, a full disk...
            if self._closing:  # (interrupted by `close`: nothing to say)
                return
            if not self._failing:
                self._failing = True
                log.warning("key store %s unavailable (%s); serving the %d keys known",
                            self.path, type(exc).__name__, len(self._by_hash))
            self._reopen_later()
            return
        if self._failing:
            self._failing = False
            log.warning("key store %s available again", self.path)
        if changes is None or not self._applied(changes):
            return
        # Best effort (locked, read-only, gone: the next change's turn); the poll goes on.
        with contextlib.suppress(Exception):
            await self.call(lambda store: store.prune_log())

    async def _changes(self, force: bool) -> KeyChanges | None:
        """What to install: the keys and teams changed since the last read, or all of
        them; None when nothing changed."""
        position = self._position
        version, mark = await self.call(lambda store: store.state(position))
        swapped, self._swapped = self._swapped, False
        if self._answered is not None:
            self._answered.set()
        # After a failure, or with another file at the path, or a mark at the position
        # read that is not the one read there, the database may be another one
        # (restored from a backup), whose counter could equal the old one's: read it
        # all. (After a read not applied too: `_applied`.)
        if force or self._failing or self._unapplied or self._version is None or swapped \
                or mark != self._mark:
            return await self.call(lambda store: store.everything())
        if version == self._version:
            return None
        mark = self._mark
        changes = await self.call(lambda store: store.changes_since(position, mark))
        if changes is None:  # pruned past `position`, or another database now
            changes = await self.call(lambda store: store.everything())
        return changes

    def _applied(self, changes: KeyChanges) -> bool:
        """`_install`, and whether it went through. The database answered: a failure
        here is the limiter's (`on_reload`), logged as such with where it failed (not
        as the store unavailable); the keys are read whole and applied again at the
        next poll."""
        try:
            self._install(changes)
        except Exception as exc:
            self._unapplied = True
            log.error("key store %s: the keys read could not be applied (%s: %s): the "
                      "%d keys read are served, the rate limits may be those of before; "
                      "read whole and applied again at the next poll", self.path,
                      type(exc).__name__, exc, len(self._by_hash), exc_info=True)
            return False
        self._unapplied = False
        return True

    async def _read_replaced(self) -> None:
        """The file moved over the database, read whole as it is on disk (not through
        the -wal beside it, the replaced one's) each time it changes on disk, until
        that -wal is gone (`_run`); admin writes are refused meanwhile."""
        loop = asyncio.get_running_loop()
        try:
            changes = await loop.run_in_executor(self._executor, self._replaced_whole)
        except Exception as exc:
            log.warning("key store %s: the file moved into place cannot be read (%s); "
                        "serving the %d keys known", self.path, type(exc).__name__,
                        len(self._by_hash))
            return
        if changes is not None:
            try:
                self._install(changes)
            except Exception as exc:  # the limiter's `on_reload`: the poll must go on
                self._replaced_read = None  # read and installed again at the next poll
                log.warning("key store %s: the file moved into place could not be applied "
                            "(%s); serving the %d keys known", self.path,
                            type(exc).__name__, len(self._by_hash))
                return
            log.error("key store %s was replaced by another file while in use: its %d "
                      "keys are served as that file holds them; %s", self.path,
                      self.key_count, REPLACED_IN_USE)

    def _replaced_whole(self) -> KeyChanges | None:
        found = os.stat(self.path)
        state = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
        if state == self._replaced_read:
            return None
        store = KeyStore(connect(self.path, create=False, immutable=True), prepare=False)
        try:
            changes = store.everything()
        finally:
            store.close()
        self._replaced_read = state
        return changes

    def _reopen_later(self) -> None:
        """After a failure the connection is opened afresh next time (the file may have
        been replaced)."""
        store, self._store = self._store, None
        if store is not None:
            self._executor.submit(store.close)

    def _install(self, changes: KeyChanges) -> None:
        index = self._index
        changed: frozenset[str] | None = None  # the subjects whose limits this read changed
        if changes.whole:
            # Compared with what was loaded before (none at the first load: unknown).
            before = None if self._version is None else dict(index.limits)
            index.replace(changes.keys, changes.teams)
            if before is not None:
                changed = frozenset(name for name in before.keys() | index.limits.keys()
                                    if before.get(name) != index.limits.get(name))
        else:
            index.apply(changes.keys, changes.teams, changes.gone_keys, changes.gone_teams)
            changed = frozenset([*("key:" + key.id for key in changes.keys),
                                 *("key:" + key_id for key_id in changes.gone_keys),
                                 *("team:" + team.id for team in changes.teams),
                                 *("team:" + team_id for team_id in changes.gone_teams)])
        # Forgotten at every change: a remembered caller holds its key's and team's
        # version of then. (On the loop, with no await since the index changed: no
        # request sees the index changed and these not yet.)
        self._known = BoundedCache(_KNOWN_LIMIT)
        self._bearers = BoundedCache(_KNOWN_LIMIT)
        self._version = changes.version
        self._position, self._mark = changes.position, changes.mark
        if self.on_reload is not None:
            # The index's own mapping (not a copy: it changes in place, and is handed
            # anew at each change), and the log's position as the limits' version.
            self.on_reload(LoadedLimits(index.limits, changes.position, changed, changes.whole))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.refresh()

    # -- authenticating ---------------------------------------------------------------

    def authenticate(self, secret: str) -> Caller:
        """The caller a virtual key's secret stands for, or AuthenticationFailed (401)."""
        known = self._known.get(secret)
        # A key without expiry or grace is remembered until `_FOREVER` itself: no clock
        # read for it (the usual key).
        if known is not None and (known[1] is _FOREVER or self._clock() < known[1]):
            return known[0]
        return self._authenticate(secret)

    def authenticate_headers(self, headers: Mapping[str, str], keyring: ClientKeyring,
                             virtual_only: bool) -> Caller:
        """The caller a request's headers present: a virtual key (`sk-aop-...`), else a
        static client key of `keyring`, else passthrough (`virtual_only`: a 401 instead,
        when the server's own Azure keys are there and no client keys guard them).
        `Authorization` is looked up once and parsed at most once; a value that opened a
        key before (`remember_bearer`) is not parsed at all (the usual virtual key)."""
        authorization = headers.get("Authorization")
        if authorization is not None:  # `authenticate_bearer`, inline (a call: ~500)
            known = self._bearers.get(authorization)
            if known is not None and (known[1] is _FOREVER or self._clock() < known[1]):
                return known[0]
        presented = presented_beside(headers, authorization)
        if presented is not None and presented.startswith(SECRET_PREFIX):
            caller = self.authenticate(presented)
            if authorization is not None and bearer_token(authorization) == presented:
                self.remember_bearer(authorization, presented)
            return caller
        if virtual_only:
            raise AuthenticationFailed(_INVALID)
        return keyring.authenticate_key(presented)

    def authenticate_bearer(self, authorization: str) -> Caller | None:
        """The caller an `Authorization` header's value stands for when the same value
        (a `Bearer <secret>`) opened a key before and still would, else None."""
        known = self._bearers.get(authorization)
        if known is not None and (known[1] is _FOREVER or self._clock() < known[1]):
            return known[0]
        return None

    def remember_bearer(self, authorization: str, secret: str) -> None:
        """`authorization` is `Bearer <secret>`, and `secret` just opened a key: the
        next request with this header is answered by `authenticate_headers` at once, for as long
        as the secret itself would be (until its expiry, its grace's end, or a reload).
        Only the plain spelling, the scheme, one space and the secret, is kept: a value
        padded with blanks opens the same key, but remembering each padding would let one
        key holder fill the table with entries of up to a whole header (64 KiB) each."""
        known = self._known.get(secret)
        if known is not None and len(authorization) == len(secret) + _BEARER_PREFIX:
            self._bearers.put(authorization, known)

    def _authenticate(self, secret: str) -> Caller:
        # A plain dict lookup, not a constant-time comparison: the key is a hash of the
        # secret, so the time a lookup takes can only tell an attacker about hashes of
        # secrets they already hold, never about a secret they do not.
        presented = hashlib.sha256(secret.encode()).hexdigest()
        known = self.caller_by_hash(presented)
        self._known.put(secret, known)
        return known[0]

    def caller_by_hash(self, presented: str,
                       current: Caller | None = None) -> tuple[Caller, float]:
        """The caller a secret whose sha256 (hex, `governance.keys.secret_hash`) is
        `presented` stands for now, and until when (the wall clock) it may, by the
        rules `authenticate` applies; or AuthenticationFailed (401). For whoever kept
        the hash, not the secret: an open Realtime session follows its key's current
        version with it (`realtime_limits.SessionKey`). `current` itself when it is of
        the key's current version (its key and team the same objects), else a new
        `Caller`; no database call (the keys in memory)."""
        entry = self._by_hash.get(presented)
        if entry is None:
            raise AuthenticationFailed(_INVALID)
        key, team = entry
        now = self._clock()
        if not presented_hash_valid(key, presented, now):
            raise AuthenticationFailed(_INVALID)
        state = key_state(key, team, now)
        if state != "active":
            raise AuthenticationFailed(_REASONS[state])
        if current is not None and current.key is key and current.team is team:
            caller = current
        else:
            caller = Caller(passthrough_key=None, key=key, team=team,
                            budgeted=budget_applies(key, team), decided=Decided())
        # Valid until the key expires, or its previous secret's grace period ends; a
        # block, a revocation or a rotation reloads the keys, which forgets this.
        until = _FOREVER if key.expires_at is None else key.expires_at
        if presented != key.secret_hash and key.previous_valid_until is not None:
            until = min(until, key.previous_valid_until)
        return caller, until

    @property
    def key_count(self) -> int:
        return len(self._index.keys)
