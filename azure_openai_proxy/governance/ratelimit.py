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
`settle` refill, check and take inline, with no object per bucket. The usual plan (one
subject with an RPM and a TPM limit, no parallel one) is taken on its `UsualLimits`
(governance/buckets.py), which the request path keeps per key version and calls itself
(gateway/governed.py `usual_limits`): no plan look-up and no `Admission` per request.

With `--workers N` the workers share their buckets and in-flight counts through a table
in shared memory (governance/sharedlimits.py, `share`): a take or settle then copies its
subjects' levels in from the table, decides as above, and writes them back, holding the
table's lock. With one worker (or a subject without any limit, or one the full table has
no row for) the state is the process's own, and nothing is locked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from azure_openai_proxy.governance.buckets import (
    MOST_DEBT_MINUTES,
    Refusal,
    UsualLimits,
    bucket_view,
    longest_refusal,
)
from azure_openai_proxy.governance.buckets import Subject as _Subject
from azure_openai_proxy.governance.estimate import DEFAULT_COMPLETION_TOKENS
from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimitheaders import limit_lines, parse_lines
from azure_openai_proxy.governance.sharedlimits import SharedTable, tag_of
from azure_openai_proxy.governance.sharedrows import (
    adopt,
    configure_shared,
    fill_row,
    give_back,
    limited,
    note_reload,
    pull,
    push,
    reclaim,
    set_rows,
)

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "Admission",
    "LimitPlan",
    "RateLimiter",
    "Refusal",
    "UsualLimits",
]

_Decision = TypeVar("_Decision")
_A = TypeVar("_A")
_B = TypeVar("_B")


def _shape(state: _Subject) -> tuple[bool, bool, int | None]:
    """What a plan made of `state` depends on: which limits it has."""
    return state.rpm is not None, state.tpm is not None, state.parallel


class LimitPlan:
    """The subjects a key's requests go through (the key's, then its team's), configured
    for one version of the key's and team's limits. `counts_tokens`: whether any has a
    TPM limit (else a request's token estimate would change nothing: it is not made)."""

    __slots__ = ("counts_tokens", "key_limits", "only", "subjects", "team_id", "team_limits",
                 "usual")

    def __init__(self, subjects: tuple[_Subject, ...], clock: Callable[[], float]) -> None:
        self.subjects = subjects
        self.counts_tokens = any(state.tpm is not None for state in subjects)
        # The usual plan, one subject with an RPM and a TPM limit and no parallel one,
        # taken on `UsualLimits` (`usual`); None: any other.
        first = subjects[0] if len(subjects) == 1 else None
        self.only = first if first is not None and first.usual else None
        self.usual = None if self.only is None else UsualLimits(self.only, clock)
        self.key_limits: Limits | None = None  # the versions it was made for (`plan`)
        self.team_id: str | None = None
        self.team_limits: Limits | None = None


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
        # A new object whenever the plans are dropped or a subject is configured with
        # other limits: a `UsualLimits` kept from an older epoch may be stale (the
        # request path's `Decided` checks it, by `is`).
        self.epoch = object()
        self._subjects: dict[str, _Subject] = {}
        self._plans: dict[str, LimitPlan] = {}  # by key id; emptied by `forget`
        self._current: Mapping[str, Limits] = {}  # by subject: the limits last loaded
        # Their version (the store's log position + 1; 0: not told, sharedrows.py).
        self._version = 0.0
        self._leaving: set[str] = set()  # deleted, kept for requests in flight (`forget`)
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
        self.epoch = object()

    @property
    def shared(self) -> bool:
        """Whether it counts with other workers (`share`)."""
        return self._table is not None

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
        current = self._current
        states = []
        for name, limits in subjects:
            loaded = current.get(name)
            if loaded is not None and loaded != limits:
                # A caller authenticated before the last reload (its body still coming
                # in): the limits it carries are gone; configured with them, the next
                # request's configure gave a raise again, once per such caller.
                limits = loaded
            states.append(self._configured(name, limits,
                                           0.0 if loaded is None else self._version))
        return LimitPlan(tuple(states), self._clock)

    def _configured(self, name: str, limits: Limits, version: float = 0.0,
                    whole: bool = False) -> _Subject:
        """Subject `name`, configured for `limits` of `version` (its row claimed or given
        back; 0: not told; `whole`: changed by a whole read, sharedrows.py `newer`)."""
        table = self._table
        state = self._subjects.get(name)
        if state is None:
            state = self._subjects[name] = _Subject(name)
        if table is not None:
            # Only a subject with a limit has a row (the others count nothing).
            if state.row is None and limited(limits):
                state.tag = tag_of(name)
                # Its requests in flight taken meanwhile count towards a parallel limit
                # set now, as with one worker (they were dropped: one more passed).
                state.row = table.row(name, self._clock(), state.in_flight)
            elif state.row is not None and not limited(limits) and not version:
                # (With versions it keeps its row, which says the limits were removed,
                # and counts its requests in flight: a limit set again counts them.)
                give_back(state, table)
        if state.limits is not None and state.limits is not limits:
            # Configured with another version of its limits (a Realtime session's or
            # a request's `Caller` from before a reload plans with the old one): a
            # `UsualLimits` kept for the version before (`Decided`) is decided anew.
            self.epoch = object()
        shape, known = _shape(state), state.limits is not None
        if state.row is None or table is None:
            state.configure(limits, self._clock())
            state.version = version
        else:
            configure_shared(state, limits, table, self._clock, version, whole)
        if _shape(state) != shape and known:
            # Other plans of this subject (its team's keys', or `admit`'s limits):
            # their `counts_tokens` and `only` may be stale. (A subject new here is in
            # none: every key's first request dropped every plan.)
            self._plans = {}
        return state

    def admit(self, subjects: Sequence[tuple[str, Limits]], tokens: int) -> Admission | Refusal:
        """Let a request costing `tokens` through every subject's limits, or refuse it
        without taking anything from any of them."""
        return self.take(self._plan_of(subjects), tokens)

    def take(self, plan: LimitPlan, tokens: int) -> Admission | Refusal:
        """`admit` for a plan: the request path's call."""
        if self._table is not None:
            return self._shared(plan.subjects, self._take_here, plan, tokens)
        usual = plan.usual
        if usual is not None and plan.only is not None:
            lines = usual.take(tokens)
            return lines if type(lines) is Refusal else Admission(plan.subjects, tokens, lines)
        now = self._clock()
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
                    return longest_refusal(subjects, tokens, now)
            cap = state.tpm
            if cap is not None:
                if now > state.tpm_stamp:
                    level = state.tpm_level + (now - state.tpm_stamp) * state.tpm_rate
                    state.tpm_level = cap if level > cap else level
                    state.tpm_stamp = now
                if tokens > state.tpm_level and tokens:  # a TPM in debt refuses no free request
                    return longest_refusal(subjects, tokens, now)
            if state.parallel is not None and state.in_flight >= state.parallel:
                return longest_refusal(subjects, tokens, now)
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
        # Tokens given back are not refilled first (governance/buckets.py's docstring);
        # a debt is.
        now = self._clock() if give_back < 0 else 0.0
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
                floor = -cap * MOST_DEBT_MINUTES  # a debt stands (buckets.py's docstring)
                state.tpm_level = cap if level > cap else floor if level < floor else level

    def refund(self, admission: Admission) -> None:
        """The request never went out (its budget refused it after its limits let it
        through): everything it took is given back, its request slot as well as its
        tokens and its in-flight slot, as if it had not come. Once settled, nothing."""
        if admission.settled:
            return
        if self._table is not None:
            # the unshared limiter's refund on the state copied in (None: one fewer in flight)
            self._shared(admission.subjects, RateLimiter.refund, self._here, admission, False)
            return
        self.settle(admission, None)
        for state in admission.subjects:
            cap = state.rpm
            if cap is not None:
                level = state.rpm_level + 1
                state.rpm_level = cap if level > cap else level

    def _shared(self, subjects: tuple[_Subject, ...], decide: Callable[[_A, _B], _Decision],
                first: _A, second: _B, checked: bool = True) -> _Decision:
        """`decide(first, second)` (this limiter's own take or settle, unshared) on
        `subjects`' shared state: copied in from the table, then written back with this
        worker's in-flight change, under the table's lock (the clock is read inside it,
        so the stamps the workers write only go forward). Each row is checked to be its
        subject's still (`checked`), but for a settle: the request it settles holds one in
        flight in each, and a row with requests in flight is never given back. A subject
        without a row looks for one when another worker has set a row's limits since it
        last looked (`adopt`: a limit added there holds here at once)."""
        table = self._table
        assert table is not None
        cells, column, changes = table.cells, table.column, table.rows_set
        table.lock()
        try:
            for state in subjects:
                row = state.row
                if row is None:
                    if cells[changes] == state.checked:
                        continue
                    row = adopt(state, table)
                    if row is None:
                        continue
                elif checked and cells[row] != state.tag:
                    # Given back by another worker (`forget`): it claims one anew.
                    row = state.row = reclaim(state, table, self._clock())
                    if row is None:
                        state.in_flight = 0  # none here: as in `give_back`
                        continue
                if pull(state, cells, row):  # a limit added or removed elsewhere
                    self._plans = {}
                    if isinstance(first, LimitPlan):  # decided by the general loop
                        first.only = first.usual = None
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
        teams that were deleted), and the plans of the keys changed (every plan when
        which is not known). A shared
        subject's row is given back (`SharedTable.free`) when no worker has a request
        in flight in it; else it is kept, and given back by a later `forget`. `keep` a
        mapping (the key directory's): each subject's limits as loaded, which plans
        take from now on (`_plan_of`), and a subject whose limits changed is configured
        at once (with `--workers N`, for the others too: they follow the shared row's
        limits before their own reload, governance/sharedrows.py). A `LoadedLimits`
        tells their version, and which subjects changed: only those are looked at (all
        of them at the first read, which tells none)."""
        before, changed, whole, rewound = self._current, None, True, False
        if isinstance(keep, LoadedLimits):
            version = keep.version + 1.0
            rewound = version < self._version  # the store went back: an older copy
            self._version, self._current = version, keep.limits
            changed, whole = keep.changed, keep.whole
            if self._table is not None:
                note_reload(self._table, rewound)  # (sharedrows.py: a rewind's count)
        else:
            self._current = keep if isinstance(keep, Mapping) else {}
        subjects = self._subjects
        names = list(subjects) if whole or changed is None else [
            n for n in changed if n in subjects]
        # With versions, limits as this worker had them are written too: the row may
        # hold another worker's older change since (`configure_shared`).
        versioned = self._table is not None and bool(self._version)
        for name in names:
            state, limits = subjects[name], self._current.get(name)
            if limits is not None and state.limits is not None and (
                    versioned or limits != state.limits):
                self._configured(name, limits, self._version,
                                 whole and changed is not None and name in changed)
        if self._table is not None:
            set_rows(self._table, self._subjects, self._current, before, changed, whole,
                     rewound, self._version, self._clock)
        if whole or changed is None:
            self._plans = {}
            self.epoch = object()
        else:  # the changed keys' plans, and their teams' keys' (a subject configured
            # with other limits made a new epoch, `_configured`)
            plans, teams = self._plans, set()
            for name in changed:
                if name.startswith("key:"):
                    plans.pop(name[4:], None)
                else:
                    teams.add(name[5:])
            if teams:
                for key_id in [k for k, plan in plans.items() if plan.team_id in teams]:
                    del plans[key_id]
        # (`keep` itself when a mapping: a set of 50,000 keys took a reload ~1 ms more)
        kept = self._current if isinstance(keep, Mapping) else set(keep)
        if not whole and changed is not None:
            names += [n for n in self._leaving if n in subjects and n not in changed]
        gone = [subjects[n] for n in names if n not in kept]
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
                    del subjects[state.name]
            finally:
                table.unlock()
        else:
            for state in gone:
                if not state.in_flight or state.row is not None:
                    del subjects[state.name]
        self._leaving = {state.name for state in gone if state.name in subjects}

    def reset(self, name: str) -> bool:
        """Fill the buckets of subject `name` ("key:ID", "team:ID"): a minute of requests
        and tokens again, any TPM debt forgiven (an operator's reset, the admin API);
        its requests in flight stay counted. In the shared table, for every worker (a
        subject the full table had no row for: this worker's count alone). False when
        nothing is known of it (no request since the start, or no limit)."""
        state, table = self._subjects.get(name), self._table
        if table is None:
            if state is not None:
                state.fill(self._clock())
            return state is not None
        table.lock()
        try:
            row = table.find(tag_of(name))
            if row is not None:
                fill_row(table.cells, row, self._clock())
            if state is not None and state.row is None:
                state.fill(self._clock())
        finally:
            table.unlock()
        return row is not None or (state is not None and state.row is None)

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
                "requests": bucket_view(state.rpm, state.rpm_level, state.rpm_rate),
                "tokens": bucket_view(state.tpm, state.tpm_level, state.tpm_rate),
            }
        return out

