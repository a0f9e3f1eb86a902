"""A shared subject's row (governance/sharedlimits.py) and the limiter's state of it
(governance/buckets.py `Subject`): copied into each other around each decision (`pull`,
`push`), and a row's limits set, with the table's lock held (`configure_shared`,
`set_row`, `change_row`, `fill_row`).

A row holds the version of the limits it was last set for (`VERSION`): the key store's
change log position as of the key directory's read that loaded them, + 1 (0: none: a limiter
told no versions, `admit` and tests, sets a row as session 27 did, `change_row`). Every
worker reads the same store, so of two reads the one with the larger counter read the
newer limits:
- a worker writes a subject's limits into its row only when they are newer than the
  row's (`configure_shared`): two admin writes to one key answered by two workers within
  a poll (0.5 s) left the older limit in force until the next poll when the worker that
  read the older one installed it after the other had written the newer;
- a worker whose row holds another version than the one it counts by follows the row
  at its next take or plan (`pull`, `Subject.follow_row`): all of its limits, one added
  or removed too, and its parallel one; its own reload then writes nothing (the row is
  as new). A key whose limits were all removed keeps its row (a limitless one, of that
  version; given back with its key or team, or taken by another name when idle,
  `SharedTable.claim`): the other workers follow the removal at once (a row given back,
  they set it again with the limits they had), and requests in flight go on being
  counted in it (a parallel limit set again counts them in every worker).
A database replaced by an older copy under a running gateway (a backup restored: its
position went back) is read whole by each worker, which then writes the limits it read
into every row of its keys and teams of another version (governance/ratelimit.py
`RateLimiter.forget`): the old database's versions are not newer. Until a worker has
read it too, its own versions are the replaced database's, higher than the restored
one's: it writes none of its limits over a row another worker set (`note_reload`: the
table counts the reloads that went back, and a worker that has not reloaded since the
last one is `stale`), it follows the row. (Without it, such a worker's next plan of a key
put the replaced database's limits back in every worker until its own next poll.) A
read the worker began before the restore and installs after another worker's rewind is
not told apart: a read's time, not a poll's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from azure_openai_proxy.governance.buckets import changed_level, limit_of
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.sharedlimits import (
    IN_FLIGHT,
    PARALLEL,
    RPM_CAP,
    TPM_CAP,
    VERSION,
    SharedTable,
    tag_of,
)

__all__ = ["ROWS_PER_RELOAD", "SharedBuckets", "adopt", "change_row", "configure_shared",
           "fill_row", "give_back", "limited", "newer", "note_reload", "pull", "push", "reclaim",
           "set_row", "set_rows"]

# Rows a reload claims at most for keys and teams whose limits it changed and that no
# worker has planned yet (`set_rows`): an operator's writes by hand, not a script's
# thousands.
ROWS_PER_RELOAD = 64

_RPM_LEVEL, _RPM_STAMP, _TPM_LEVEL, _TPM_STAMP = RPM_CAP + 1, RPM_CAP + 2, TPM_CAP + 1, TPM_CAP + 2


class SharedBuckets(Protocol):
    """A subject's state as the limiter keeps it (governance/buckets.py `Subject`):
    what is copied in from its row before a decision and written back after."""

    name: str
    row: int | None
    tag: float
    limits: Limits | None
    version: float
    parallel: int | None
    rpm: float | None
    rpm_level: float
    rpm_stamp: float
    tpm: float | None
    tpm_level: float
    tpm_stamp: float
    in_flight: int
    checked: float

    def configure(self, limits: Limits, now: float) -> None: ...

    def follow(self, rpm: float, tpm: float, parallel: int | None) -> None: ...

    def follow_row(self, rpm: float, tpm: float, parallel: float, version: float) -> bool: ...


def pull(state: SharedBuckets, cells: memoryview[float], row: int) -> bool:
    """Copy a subject's shared levels and stamps (of the limits it has here) and its
    in-flight total into `state`. A row of another version is followed whole
    (`Subject.follow_row`; True when a limit was added or removed: the plans made of
    `state` may be stale); in a row of its version, a limit another worker changed is
    followed (`Subject.follow`: rows of no version, `change_row`)."""
    rpm, tpm, parallel = cells[row + RPM_CAP], cells[row + TPM_CAP], cells[row + PARALLEL]
    reshaped = False
    if cells[row + VERSION] != state.version:
        reshaped = state.follow_row(rpm, tpm, parallel, cells[row + VERSION])
    elif ((rpm != state.rpm and rpm and state.rpm is not None)
            or (tpm != state.tpm and tpm and state.tpm is not None)
            or (parallel and state.parallel is not None and parallel != state.parallel + 1)):
        state.follow(rpm, tpm, int(parallel) - 1 if parallel else None)
    if state.rpm is not None:
        state.rpm_level, state.rpm_stamp = cells[row + _RPM_LEVEL], cells[row + _RPM_STAMP]
    if state.tpm is not None:
        state.tpm_level, state.tpm_stamp = cells[row + _TPM_LEVEL], cells[row + _TPM_STAMP]
    state.in_flight = int(cells[row + IN_FLIGHT])
    return reshaped


def push(state: SharedBuckets, cells: memoryview[float], row: int, column: int, change: int) -> None:
    """Write `state`'s levels and stamps back, and this worker's in-flight `change` (to
    its column and to the total). Its stamps are the row's or later: the limiter never
    moves a stamp back (`Subject.refill`), so the time up to a stamp is refilled once."""
    if state.rpm is not None:
        cells[row + _RPM_LEVEL], cells[row + _RPM_STAMP] = state.rpm_level, state.rpm_stamp
    if state.tpm is not None:
        cells[row + _TPM_LEVEL], cells[row + _TPM_STAMP] = state.tpm_level, state.tpm_stamp
    if change:
        held = cells[row + column] + change
        if held >= 0:  # a column zeroed by a reset is not taken below zero
            cells[row + column] = held
            cells[row + IN_FLIGHT] += change


def fill_row(cells: memoryview[float], row: int, now: float) -> None:
    """`Subject.fill` on a row, with the lock held: each bucket with a limit full at
    `now` (its stamp never moved back), for every worker."""
    for at in (row + RPM_CAP, row + TPM_CAP):
        cap = cells[at]
        if cap > 0.0:
            cells[at + 1], cells[at + 2] = cap, max(now, cells[at + 2])


def configure_shared(state: SharedBuckets, limits: Limits, table: SharedTable,
                     clock: Callable[[], float], version: float = 0.0,
                     whole: bool = False) -> None:
    """A shared subject's `configure`, as `Subject.configure` does it on the row: its
    limits of `version` are written into the row when they are newer than the row's
    (`set_row`), else the row is followed as it is (`pull`). Without a version (0, in a
    row of none), a limit this worker loaded anew (it differs from the one it loaded
    before) is written (`change_row`); a limit it did not change here (a subject new to this worker, or the
    same limit loaded again) is not: the row's stands and is followed, whatever cap this
    worker counted by (else a worker whose reload came after two changes and that had
    followed the first wrote that cap back as a change of its own)."""
    row, cells = state.row, table.cells
    assert row is not None
    table.lock()
    try:
        loaded = state.limits  # None: new here, it joins the row as the row is
        state.configure(limits, clock())  # this worker's caps and rates
        if cells[row] != state.tag:  # given back by another worker: claimed anew
            row = state.row = table.claim(state.tag, clock())
            if row is None:
                state.in_flight = 0  # none of its was in the row given back
                return
        written = cells[row + VERSION]
        setting = newer(cells, row, limits, version, whole, stale(table)) if version else 0.0
        if setting:
            set_row(table, row, limits, setting, clock)
        elif not version and not written:
            change_row(cells, row, loaded if loaded is not None else limits, limits, clock)
        if version or written:
            # Its caps are the row's whatever it counted by before (a row followed, then
            # its own limits loaded again: `configure` saw them unchanged).
            state.follow_row(cells[row + RPM_CAP], cells[row + TPM_CAP], cells[row + PARALLEL],
                             cells[row + VERSION])
        pull(state, cells, row)
    finally:
        table.unlock()


def note_reload(table: SharedTable, rewound: bool) -> None:
    """At a worker's reload, before its limits are configured: one that went back (the
    store replaced by an older copy: `rewound`) is counted in the table, and the worker's
    versions are of the store as the table last went back (not `stale`)."""
    if rewound:
        table.lock()
        try:
            table.cells[table.rewinds] += 1.0
        finally:
            table.unlock()
    table.rewinds_seen = table.cells[table.rewinds]


def stale(table: SharedTable) -> bool:
    """Whether another worker read the store gone back since this one's last reload:
    this one's versions may be the replaced store's (`newer` then writes no set row)."""
    return table.cells[table.rewinds] != table.rewinds_seen


def newer(cells: memoryview[float], row: int, limits: Limits, version: float,
          whole: bool, stale: bool = False) -> float:
    """The version `limits` of `version` are written into `row` with when newer than the
    row's (0.0: not newer). `whole`: a subject a whole read changed (the key directory
    reads whole another database, storeleft): when the row holds other limits of the same
    log position, that database is another one at the same position (a copy that went its
    own way with as many writes): its limits are written half-way from the row's version
    to the next position's (newer than the row's, older than the database's next change),
    else they were neither written nor followed until the subject changed again. `stale`
    (`stale`): only a row no worker set yet is written."""
    written = cells[row + VERSION]
    if stale and written:
        return 0.0
    if version > written:
        return version
    if whole and written < version + 1.0 and not (
            cells[row + RPM_CAP] == (limit_of(limits.rpm) or 0.0)
            and cells[row + TPM_CAP] == (limit_of(limits.tpm) or 0.0)
            and cells[row + PARALLEL] == (
                0.0 if limits.max_parallel is None else limits.max_parallel + 1.0)):
        return (written + version + 1.0) / 2.0
    return 0.0


def set_row(table: SharedTable, row: int, limits: Limits, version: float,
            clock: Callable[[], float]) -> None:
    """With the lock held: `row` holds `limits`, of `version`, from now on; each bucket
    whose limit differs from the row's is changed (`_set_bucket`). Counted in the
    workers' row (`adopt`)."""
    cells = table.cells
    cells[table.rows_set] += 1.0
    _set_bucket(cells, row + RPM_CAP, limit_of(limits.rpm), clock)
    _set_bucket(cells, row + TPM_CAP, limit_of(limits.tpm), clock)
    parallel = limits.max_parallel
    cells[row + PARALLEL] = 0.0 if parallel is None else parallel + 1.0
    cells[row + VERSION] = version


def change_row(cells: memoryview[float], row: int, was: Limits, limits: Limits,
               clock: Callable[[], float]) -> None:
    """With the lock held, in a row of no version: the limits of `row` changed from
    `was` to `limits` (what a worker loaded before and now), each that changed as
    `configure_shared` says (a row without a limit yet is given `limits`' in full); the
    others are left as the row has them."""
    for new, old, at in ((limits.rpm, was.rpm, row + RPM_CAP),
                         (limits.tpm, was.tpm, row + TPM_CAP)):
        cap = limit_of(new)
        if cap != limit_of(old) or (cap is not None and cells[at] == 0.0):
            _set_bucket(cells, at, cap, clock)
    parallel = limits.max_parallel
    if (parallel != was.max_parallel
            or (parallel is not None and cells[row + PARALLEL] == 0.0)):
        cells[row + PARALLEL] = 0.0 if parallel is None else parallel + 1.0


def _set_bucket(cells: memoryview[float], at: int, cap: float | None,
                clock: Callable[[], float]) -> None:
    """The bucket at `at` (its limit, level and stamp: `RPM_CAP`...) of limit `cap`: none
    drops it (as an unshared subject's is: a debt or a spent minute kept here refused the
    limit set again); the first limit (or one set again) is a full minute; another one is
    refilled at the old limit's rate, then changed (`changed_level`), once, by the first
    worker to write it (the row's limit is then it)."""
    before, level, stamp = cells[at], cells[at + 1], cells[at + 2]
    if cap is None:
        if before != 0.0:
            cells[at], cells[at + 1], cells[at + 2] = 0.0, 0.0, 0.0
        return
    if before == cap:
        return
    now = max(clock(), stamp)
    level = cap if before == 0.0 else changed_level(
        min(before, level + (now - stamp) * before / 60.0), before, cap)
    cells[at], cells[at + 1], cells[at + 2] = cap, level, now


def give_back(state: SharedBuckets, table: SharedTable) -> None:
    """Free `state`'s row (its limits were removed, in a limiter told no versions)
    unless requests are in flight in it: then it keeps it until a later plan or
    `forget`."""
    row = state.row
    assert row is not None
    table.lock()
    try:
        table.free(row, state.tag)
        if table.cells[row] != state.tag:
            # Nothing was in flight in it (else it was kept): counted here alone from
            # 0, not from the last total read (a stale one became phantom requests in
            # this worker's column when a limit came back, `SharedTable.row`).
            state.row, state.in_flight = None, 0
    finally:
        table.unlock()


def adopt(state: SharedBuckets, table: SharedTable) -> int | None:
    """With the lock held, for a subject without a row here (no limit as this worker
    loaded it): the row another worker set for it since this one loaded its limits (a
    limit added there), whose limits it follows from now on; None if there is none. The
    requests this worker has in flight in it, taken alone until now, are counted in the
    row (as by `SharedTable.row`). Looked for once per change of any row's limits (the
    count `set_row` keeps in the workers' row)."""
    cells = table.cells
    state.checked = cells[table.rows_set]
    if not state.tag:
        state.tag = tag_of(state.name)
    row = table.find(state.tag)
    if row is None or cells[row + VERSION] <= state.version:
        return None
    cells[row + table.column] += state.in_flight
    cells[row + IN_FLIGHT] += state.in_flight
    state.row = row
    return row


def reclaim(state: SharedBuckets, table: SharedTable, now: float) -> int | None:
    """A row for `state` again, with the table's lock held, after another worker gave
    its row back (the key or team was deleted there first): this worker's copy of its
    levels and limits (of its version) is written to it (None: no row is free, it is
    counted here alone). A row another worker claimed first with newer limits (of a
    later version) is left as it is, and followed (`pull`)."""
    row = table.claim(state.tag, now)
    if row is not None and table.cells[row + VERSION] <= state.version:
        cells = table.cells
        cells[row + RPM_CAP], cells[row + TPM_CAP] = state.rpm or 0.0, state.tpm or 0.0
        cells[row + PARALLEL] = 0.0 if state.parallel is None else state.parallel + 1.0
        cells[row + VERSION] = state.version
        push(state, cells, row, table.column, 0)
    return row


def limited(limits: Limits) -> bool:
    """Whether `limits` has any rate limit (only a subject with one has a row)."""
    return (limit_of(limits.rpm) is not None or limit_of(limits.tpm) is not None
            or limits.max_parallel is not None)


def set_rows(table: SharedTable, held: Mapping[str, SharedBuckets], current: Mapping[str, Limits],
             before: Mapping[str, Limits], changed: frozenset[str] | None, whole: bool,
             rewound: bool, version: float, clock: Callable[[], float]) -> None:
    """Put a change a worker's reload loaded (`current`, of `version`) in force in the
    shared rows of subjects it holds no state of (not in `held`; `set_row`, when newer
    than the row's; without versions, `change_row` from `before`), and, with versions, in
    an existing row of one it holds without a row (another worker, having read a limit
    added since, may have set one, and would count by it until its own reload): a
    subject new to a worker joins its row as it is (`configure_shared`), so the change
    would wait for the reload of the worker that planned it (the admin write's worker may
    be this one). A
    subject in `changed` with no row yet is given one, up to `ROWS_PER_RELOAD` (else the
    first worker to plan it after the change, yet to reload, made it with its old limits,
    and this one joined them): a reload that changed many keys no one uses (a script's)
    neither fills the table nor holds the event loop for seconds; past them, the change
    holds in each worker at its reload (within a poll: a worker yet to reload that plans
    such a key first sets its row with the old limits, of their older version). A whole
    read (`LoadedLimits.whole`) sets every row of a loaded subject older than it: a
    subject changed and set back since this worker's last read is not in `changed`, and
    its row may hold the change between (~120 ms at 50,000 keys; not at a worker's first
    read, which knows of no change and claims nothing: the workers that wrote a row read
    on from it). When the store went back (`rewound`), every row of a loaded subject of
    another version is set, those in `held` too (the old store's versions are not
    newer). No state is kept for them (a row is found again when the worker plans one)."""
    claims, cells = ROWS_PER_RELOAD, table.cells
    if not version:
        names: Iterable[str] = (n for n, limits in current.items()
                                if (was := before.get(n)) is not None and was is not limits
                                and n not in held and was != limits)
    else:
        # (None at a worker's first read: no row is older than it was when written.)
        names = current if rewound or (whole and changed is not None) else changed or ()
    for name in names:
        limits = current.get(name)
        state = held.get(name)
        # (A subject held without a row, with versions: its limits were removed here, or
        # it never had one; another worker may have set a row for it meanwhile.)
        if limits is None or (state is not None and not rewound
                              and (state.row is not None or not version)):
            continue
        tag = tag_of(name)
        table.lock()
        try:
            row = table.find(tag)
            # (With versions, a row for limits removed too: it says so to a worker yet
            # to reload, which would set its row with the limits it had.)
            if row is None and claims and not rewound and state is None and (
                    limited(limits) if not version else changed is not None and name in changed):
                claims -= 1
                row = table.claim(tag, clock())
            if row is None:
                continue
            if not version:
                change_row(cells, row, before[name], limits, clock)
            elif rewound:
                if cells[row + VERSION] != version:
                    set_row(table, row, limits, version, clock)
            elif setting := newer(cells, row, limits, version,
                                  whole and changed is not None and name in changed,
                                  stale(table)):
                set_row(table, row, limits, setting, clock)
        finally:
            table.unlock()
