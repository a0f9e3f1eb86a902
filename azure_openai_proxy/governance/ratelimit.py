"""Per-key and per-team request limits: requests per minute, tokens per minute, and
requests in flight. Pure: the clock is injected, nothing here awaits or does I/O.

    plan = limiter.plan(key_id, key_limits, team_id, team_limits)  # once per key version
    limiter.take(plan, tokens)
        -> Admission (every subject passed; tokens reserved, one request in flight each)
        |  Refusal (nothing was taken from any subject)
    limiter.settle(admission, used_tokens)   # once, whatever happened to the request

`admit([("key:k1", key_limits), ("team:t1", team_limits)], tokens)` does the same with
a plan made for the one call (tests, tools).

RPM and TPM are token buckets holding a minute's worth (capacity = the limit, refilled
at limit/60 per second): a burst of the whole minute's allowance passes at once, then
requests pass at the refill rate. TPM is reserved before the request goes out (the
estimate of governance/estimate.py `estimate_tokens`) and settled with Azure's usage when it is known: the
difference is given back, or taken (a bucket may go below zero: the next requests wait).

The request path pays for a few attribute reads and float operations per subject: a
key's subjects are looked up and configured once per version of the key (`plan`, kept
until the limits change or the keys are reloaded), not per request, and `take` and
`settle` refill, check and take inline, with no object per bucket.

With `--workers N` the workers share their buckets and in-flight counts through a table
in shared memory (governance/sharedlimits.py, `share`): a take or settle then copies its
subjects' levels in from the table, decides as above, and writes them back, holding the
table's lock. With one worker (or a subject without any limit, or one the full table has
no row for) the state is the process's own, and nothing is locked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from azure_openai_proxy.governance.estimate import DEFAULT_COMPLETION_TOKENS
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimitheaders import (
    TOKENS_LINES,
    duration,
    limit_headers,
    limit_lines,
    parse_lines,
    requests_lines,
)
from azure_openai_proxy.governance.sharedlimits import (
    RPM_CAP,
    TPM_CAP,
    SharedTable,
    configure_shared,
    pull,
    push,
    tag_of,
)

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "Admission",
    "LimitPlan",
    "RateLimiter",
    "Refusal",
]

_PARALLEL_RETRY_SECONDS = 1.0

LimitKind = Literal["requests", "tokens", "parallel"]
_Decision = TypeVar("_Decision")
_A = TypeVar("_A")
_B = TypeVar("_B")


class _Subject:
    """One key's or team's state: its two buckets (`rpm`/`tpm` None: no such limit),
    each a level refilled from its stamp, and its requests in flight."""

    __slots__ = ("in_flight", "limits", "lines_rpm_level", "lines_tpm_level", "name",
                 "parallel", "row", "rpm", "rpm_level", "rpm_lines", "rpm_rate", "rpm_stamp",
                 "rpm_text", "tag", "tpm", "tpm_level", "tpm_lines", "tpm_rate", "tpm_stamp",
                 "tpm_text")

    def __init__(self, name: str, row: int | None = None, tag: float = 0.0) -> None:
        self.name = name
        self.row = row  # its row in the shared table; None: this process's alone
        self.tag = tag  # what marks the row as its own (sharedlimits.tag_of)
        self.limits: Limits | None = None
        self.rpm: float | None = None
        self.rpm_level = self.rpm_rate = self.rpm_stamp = 0.0
        self.rpm_text = ""
        self.tpm: float | None = None
        self.tpm_level = self.tpm_rate = self.tpm_stamp = 0.0
        self.tpm_text = ""
        self.parallel: int | None = None
        self.in_flight = 0
        # Each bucket's head lines in its last answer and the level they were made from
        # (`_take_only`); NaN equals no level. Forgotten when its limits change.
        self.rpm_lines = self.tpm_lines = b""
        self.lines_rpm_level = self.lines_tpm_level = math.nan

    def refill(self, now: float) -> None:
        """Refill up to `now`. A stamp never goes back (a clock read earlier than it, in
        another worker: the time up to it is not refilled twice)."""
        if now > self.rpm_stamp:
            cap = self.rpm
            if cap is not None:
                level = self.rpm_level + (now - self.rpm_stamp) * self.rpm_rate
                self.rpm_level = cap if level > cap else level
            self.rpm_stamp = now
        if now > self.tpm_stamp:
            cap = self.tpm
            if cap is not None:
                level = self.tpm_level + (now - self.tpm_stamp) * self.tpm_rate
                self.tpm_level = cap if level > cap else level
            self.tpm_stamp = now

    def configure(self, limits: Limits, now: float) -> None:
        """Apply `limits` (a changed limit keeps what is left, up to the new minute)."""
        self.refill(now)
        if limits is self.limits:
            return
        self.limits = limits
        self.rpm_lines = self.tpm_lines = b""
        self.lines_rpm_level = self.lines_tpm_level = math.nan
        rpm, tpm = _limit(limits.rpm), _limit(limits.tpm)
        if rpm is None:
            self.rpm = None
        elif rpm != self.rpm:
            self.rpm_level = rpm if self.rpm is None else min(self.rpm_level, rpm)
            self.rpm, self.rpm_rate, self.rpm_text = rpm, rpm / 60.0, str(int(rpm))
        if tpm is None:
            self.tpm = None
        elif tpm != self.tpm:
            self.tpm_level = tpm if self.tpm is None else min(self.tpm_level, tpm)
            self.tpm, self.tpm_rate, self.tpm_text = tpm, tpm / 60.0, str(int(tpm))
        self.parallel = limits.max_parallel


def _shape(state: _Subject) -> tuple[bool, bool, int | None]:
    """What a plan made of `state` depends on: which limits it has."""
    return state.rpm is not None, state.tpm is not None, state.parallel


def _limit(value: int | None) -> float | None:
    return float(value) if value is not None and value > 0 else None


def _limited(limits: Limits) -> bool:
    return (_limit(limits.rpm) is not None or _limit(limits.tpm) is not None
            or limits.max_parallel is not None)


class LimitPlan:
    """The subjects a key's requests go through (the key's, then its team's), configured
    for one version of the key's and team's limits. `counts_tokens`: whether any has a
    TPM limit (else a request's token estimate would change nothing: it is not made)."""

    __slots__ = ("counts_tokens", "key_limits", "only", "subjects", "team_id", "team_limits")

    def __init__(self, subjects: tuple[_Subject, ...], key_limits: Limits | None = None,
                 team_id: str | None = None, team_limits: Limits | None = None) -> None:
        self.subjects = subjects
        self.counts_tokens = any(state.tpm is not None for state in subjects)
        # The usual plan, one subject with an RPM and a TPM limit and no parallel one,
        # taken on `RateLimiter.take`'s short path; None: any other.
        first = subjects[0] if len(subjects) == 1 else None
        self.only = first if first is not None and _shape(first) == (True, True, None) else None
        self.key_limits = key_limits
        self.team_id = team_id
        self.team_limits = team_limits


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that must wait: which limit of which subject, for how long, and the
    `x-ratelimit-*` headers to answer with."""

    subject: str
    kind: LimitKind
    retry_after: float  # seconds
    headers: dict[str, str]
    never: bool = False  # the request alone is over the limit: waiting will not help


class Admission:
    """A request let through: what it holds until `RateLimiter.settle`, and its
    `x-ratelimit-*` headers as a head's lines (`limit_lines`) or a dict (`headers`)."""

    __slots__ = ("head_lines", "reserved", "settled", "subjects")

    def __init__(self, subjects: tuple[_Subject, ...], reserved: int,
                 head_lines: bytes) -> None:
        self.subjects = subjects
        self.reserved = reserved
        self.head_lines = head_lines
        self.settled = False

    @property
    def headers(self) -> dict[str, str]:
        return parse_lines(self.head_lines)


class RateLimiter:
    """Every subject's buckets and in-flight count: one worker's, or, once `share`d, the
    server's (all its workers')."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._subjects: dict[str, _Subject] = {}
        self._plans: dict[str, LimitPlan] = {}  # by key id; emptied by `forget`
        self._table: SharedTable | None = None
        self._here = self  # what decides, on state copied in from the table (`share`)
        # Its take and settle, bound once (not per request).
        self._take_here: Callable[[LimitPlan, int], Admission | Refusal] = self.take
        self._settle_here: Callable[[Admission, int | None], None] = self.settle

    def share(self, table: SharedTable) -> None:
        """Count in `table`, with the server's other workers, from now on (called once,
        before the first request: what was counted here alone is dropped). `clock` must
        be one all the workers read alike (time.monotonic is: one clock per machine;
        the runner's workers use it). A worker whose clock reads behind a stamp another
        wrote does not move it back (`_Subject.refill`): it refills nothing until its
        clock passes it."""
        self._here = RateLimiter(self._clock)  # unshared: its take and settle decide
        self._take_here, self._settle_here = self._here.take, self._here.settle
        self._table = table
        self._subjects, self._plans = {}, {}

    def plan(self, key_id: str, key_limits: Limits, team_id: str | None,
             team_limits: Limits | None) -> LimitPlan:
        """The plan of a key (and its team): the one made last time while their limits
        are the same objects, else a new one with every subject configured."""
        plan = self._plans.get(key_id)
        if (plan is not None and plan.key_limits is key_limits
                and plan.team_limits is team_limits and plan.team_id == team_id):
            return plan
        subjects = [("key:" + key_id, key_limits)]
        if team_id is not None and team_limits is not None:
            subjects.append(("team:" + team_id, team_limits))
        plan = self._plans[key_id] = self._plan_of(subjects)
        plan.key_limits, plan.team_id, plan.team_limits = key_limits, team_id, team_limits
        return plan

    def _plan_of(self, subjects: Sequence[tuple[str, Limits]]) -> LimitPlan:
        table = self._table
        states = []
        for name, limits in subjects:
            state = self._subjects.get(name)
            if state is None:
                state = self._subjects[name] = _Subject(name)
            if table is not None:
                # Only a subject with a limit has a row (the others count nothing).
                if state.row is None and _limited(limits):
                    state.tag = tag_of(name)
                    state.row = table.row(name, self._clock())
                elif state.row is not None and not _limited(limits):
                    _give_back(state, table)
            shape = _shape(state)
            if state.row is None or table is None:
                state.configure(limits, self._clock())
            else:
                configure_shared(state, limits, table, self._clock)
            if _shape(state) != shape:
                # Other plans of this subject (its team's keys', or `admit`'s limits):
                # their `counts_tokens` and `only` may be stale.
                self._plans = {}
            states.append(state)
        return LimitPlan(tuple(states))

    def admit(self, subjects: Sequence[tuple[str, Limits]], tokens: int) -> Admission | Refusal:
        """Let a request costing `tokens` through every subject's limits, or refuse it
        without taking anything from any of them."""
        return self.take(self._plan_of(subjects), tokens)

    def take(self, plan: LimitPlan, tokens: int) -> Admission | Refusal:
        """`admit` for a plan: the request path's call."""
        if self._table is not None:
            return self._shared(plan.subjects, self._take_here, plan, tokens)
        now = self._clock()
        state = plan.only
        if state is not None:
            return _take_only(state, plan.subjects, tokens, now)
        subjects = plan.subjects
        for state in subjects:
            # Refilled inline (`_Subject.refill`): this runs for every request.
            cap = state.rpm
            if cap is not None:
                if now > state.rpm_stamp:
                    level = state.rpm_level + (now - state.rpm_stamp) * state.rpm_rate
                    state.rpm_level = cap if level > cap else level
                    state.rpm_stamp = now
                if state.rpm_level < 1:
                    return _refusal(state, tokens, now)
            cap = state.tpm
            if cap is not None:
                if now > state.tpm_stamp:
                    level = state.tpm_level + (now - state.tpm_stamp) * state.tpm_rate
                    state.tpm_level = cap if level > cap else level
                    state.tpm_stamp = now
                if tokens > state.tpm_level:
                    return _refusal(state, tokens, now)
            if state.parallel is not None and state.in_flight >= state.parallel:
                return _refusal(state, tokens, now)
        for state in subjects:
            state.rpm_level -= 1  # harmless without a limit: never read then
            state.tpm_level -= tokens
            state.in_flight += 1
        return Admission(subjects, tokens, limit_lines(subjects))

    def settle(self, admission: Admission, used_tokens: int | None) -> None:
        """The request ended (answered, failed, or its client left): its in-flight slot
        is freed and its token reservation replaced by `used_tokens` (None: unknown,
        the reservation is given back). Settling twice does nothing."""
        if admission.settled:
            return
        if self._table is not None:
            self._shared(admission.subjects, self._settle_here, admission, used_tokens, False)
            return
        admission.settled = True
        give_back = admission.reserved - (used_tokens or 0)
        now = self._clock() if give_back else 0.0
        for state in admission.subjects:
            if state.in_flight > 0:
                state.in_flight -= 1
            cap = state.tpm
            if cap is not None and give_back:
                level = state.tpm_level
                if now > state.tpm_stamp:
                    level += (now - state.tpm_stamp) * state.tpm_rate
                    if level > cap:
                        level = cap
                    state.tpm_stamp = now
                level += give_back
                state.tpm_level = cap if level > cap else -cap if level < -cap else level

    def _shared(self, subjects: tuple[_Subject, ...], decide: Callable[[_A, _B], _Decision],
                first: _A, second: _B, checked: bool = True) -> _Decision:
        """`decide(first, second)` (this limiter's own take or settle, unshared) on
        `subjects`' shared state: copied in from the table, then written back with this
        worker's in-flight change, under the table's lock (the clock is read inside it,
        so the stamps the workers write only go forward). Each row is checked to be its
        subject's still (`checked`), but for a settle: the request it settles holds one in
        flight in each, and a row with requests in flight is never given back."""
        table = self._table
        assert table is not None
        cells, column = table.cells, table.column
        table.lock()
        try:
            for state in subjects:
                row = state.row
                if row is not None:
                    if checked and cells[row] != state.tag:
                        # Given back by another worker (`forget`): it claims one anew.
                        row = state.row = _reclaim(state, table, self._clock())
                        if row is None:
                            continue
                    pull(state, cells, row)
            result = decide(first, second)
            # Taken: one more in flight; settled (None): one fewer.
            change = 1 if isinstance(result, Admission) else -1 if result is None else 0
            for state in subjects:
                row = state.row
                if row is not None:
                    push(state, cells, row, column, change)
        finally:
            table.unlock()
        return result

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the state of subjects not in `keep` and with nothing in flight (keys and
        teams that were deleted), and every plan (the keys were reloaded). A shared
        subject's row is given back (`SharedTable.free`) when no worker has a request
        in flight in it; else it is kept, and given back by a later `forget`."""
        self._plans = {}
        kept = set(keep)
        gone = [s for n, s in self._subjects.items() if n not in kept]
        table = self._table
        if table is not None and any(s.row is not None for s in gone):
            table.lock()
            try:
                for state in gone:
                    if state.row is not None:
                        table.free(state.row, state.tag)
                        if table.cells[state.row] == state.tag:
                            continue  # in flight somewhere: kept for now
                    elif state.in_flight:
                        continue
                    del self._subjects[state.name]
            finally:
                table.unlock()
            return
        for state in gone:
            if not state.in_flight or state.row is not None:
                del self._subjects[state.name]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each subject's live state, for the admin API."""
        subjects = tuple(self._subjects.values())
        if self._table is not None:
            return self._shared(subjects, self._here._snapshot_of, subjects, None)
        return self._snapshot_of(subjects, None)

    def _snapshot_of(self, subjects: tuple[_Subject, ...],
                    _unused: None) -> dict[str, dict[str, Any]]:
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for state in subjects:
            state.refill(now)
            out[state.name] = {
                "in_flight": state.in_flight, "max_parallel": state.parallel,
                "requests": _bucket_view(state.rpm, state.rpm_level, state.rpm_rate),
                "tokens": _bucket_view(state.tpm, state.tpm_level, state.tpm_rate),
            }
        return out


def _give_back(state: _Subject, table: SharedTable) -> None:
    """Free `state`'s row (its limits were removed) unless requests are in flight in
    it: then it keeps it until a later plan or `forget`."""
    row = state.row
    assert row is not None
    table.lock()
    try:
        table.free(row, state.tag)
        if table.cells[row] != state.tag:
            state.row = None
    finally:
        table.unlock()


def _reclaim(state: _Subject, table: SharedTable, now: float) -> int | None:
    """A row for `state` again, with the table's lock held, after another worker gave
    its row back (the key or team was deleted there first): this worker's copy of its
    levels is written to it (None: no row is free, it is counted here alone)."""
    row = table.claim(state.tag, now)
    if row is not None:
        cells = table.cells
        cells[row + RPM_CAP], cells[row + TPM_CAP] = state.rpm or 0.0, state.tpm or 0.0
        push(state, cells, row, table.column, 0)
    return row


def _take_only(state: _Subject, subjects: tuple[_Subject, ...], tokens: int,
               now: float) -> Admission | Refusal:
    """`RateLimiter.take` for `LimitPlan.only`: refilled, checked and taken on locals,
    its lines (`limit_lines`) formatted from them (tests/unit/test_ratelimit_only.py)."""
    cap, level, tpm, tokens_level = state.rpm, state.rpm_level, state.tpm, state.tpm_level
    assert cap is not None and tpm is not None
    rate, tokens_rate = state.rpm_rate, state.tpm_rate
    if now > state.rpm_stamp:
        level += (now - state.rpm_stamp) * rate
        if level > cap:
            level = cap
        state.rpm_level, state.rpm_stamp = level, now
    if now > state.tpm_stamp:
        tokens_level += (now - state.tpm_stamp) * tokens_rate
        if tokens_level > tpm:
            tokens_level = tpm
        state.tpm_level, state.tpm_stamp = tokens_level, now
    if level < 1 or tokens > tokens_level:
        return _refusal(state, tokens, now)
    level -= 1
    tokens_level -= tokens
    state.rpm_level, state.tpm_level = level, tokens_level
    state.in_flight += 1
    # A bucket at its level in the last answer (full before the take; for tokens, a
    # request of the same size) has the same lines: a comparison, not a format. The
    # tokens' (which change with every request's size) are made here, no call.
    requests = state.rpm_lines if level == state.lines_rpm_level else requests_lines(state)
    if tokens_level != state.lines_tpm_level:
        wait = (tpm - tokens_level) / tokens_rate
        state.tpm_lines = (TOKENS_LINES[wait < 1] % (
            state.tpm_text, tokens_level if tokens_level >= 1 else 0,
            wait * 1000 + 0.5 if wait < 1 else duration(wait))).encode()
        state.lines_tpm_level = tokens_level
    return Admission(subjects, tokens, requests + state.tpm_lines)


def _refusal(state: _Subject, tokens: int, now: float) -> Refusal:
    """Why `state` refuses a request of `tokens` (parallel, then requests, then tokens)."""
    state.refill(now)
    name, headers = state.name, limit_headers((state,))
    if state.parallel is not None and state.in_flight >= state.parallel:
        return Refusal(name, "parallel", _PARALLEL_RETRY_SECONDS, headers)
    if state.rpm is not None and state.rpm_level < 1:
        return Refusal(name, "requests", (1 - state.rpm_level) / state.rpm_rate, headers)
    cap = state.tpm
    assert cap is not None
    if tokens > cap:
        return Refusal(name, "tokens", 60.0, headers, never=True)
    return Refusal(name, "tokens", (tokens - state.tpm_level) / state.tpm_rate, headers)


def _bucket_view(cap: float | None, level: float, rate: float) -> dict[str, Any] | None:
    if cap is None:
        return None
    return {"limit": int(cap), "remaining": max(0, math.floor(level)),
            "reset_seconds": round(max(0.0, (cap - level) / rate), 3)}
