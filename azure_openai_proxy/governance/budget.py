"""Budgets: what a key or a team has spent in its budget period, and whether it may spend
more. Pure: spend comes in as numbers, the time as a clock passed in.

Periods are UTC calendar periods: `daily` (today), `weekly` (since Monday), `monthly`
(since the 1st), `none` (all the ledger has). A key (or team) whose spend has reached
its `budget_usd` is exhausted: its requests get 429 `insufficient_quota`; past its
`soft_budget_usd` it is warned (once per period in the log, a header on every answer)
and served.

`SpendBook` is a value: the ledger writer builds a new one (from the database's daily
rollups, or the old book plus a batch's costs) and `BudgetGuard.replace` swaps it in with
one assignment, so the event loop reads a consistent book without a lock.

The book only knows what the writer has written, up to a few seconds late. What this
worker has admitted and not yet seen in the book is held in memory:

    guard.reserve(key, team, usd)    at admission: refused when the book's spend plus what
                                     is held reaches the budget; else the request's
                                     estimated cost is held
    guard.settle(hold, request_id, usd)  when it ends: the estimate is replaced by the real
                                     cost, held under its request id until...
    guard.replace(book, recorded)    ...the writer swaps in a book that has the record
    guard.release(request_ids)       (or the record is lost: it never will)

so N concurrent (or quick sequential) requests cannot spend a budget N times over. Held
amounts count against every period (at midnight a held cost of yesterday may still count
against today's budget for a few seconds: the safe side). A hold is released once, by
whichever call comes first (the request id is popped); which process wrote the record
does not matter: the writer releases a hold when a book read from the database has the
record (gateway/ledger.py). Holds live in the worker's memory: a worker that crashes
takes its holds with it, and the records it spooled count once, from the database.

With `--workers N` the guard is `share`d: what each worker holds is also written to a
table in shared memory (governance/sharedholds.py), and every worker admits against its
book plus its own holds plus the other workers'. A cost released from this worker's holds
(its book has the record) stays in its shared column until every worker's book has it:
`replace` is given when its book was read (`read_at`, from `book_read_started`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from azure_openai_proxy.governance.model import BudgetPeriod, Limits, Team, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.sharedholds import MAX_LINGER, Owner, SharedHolds

__all__ = [
    "BudgetDecision",
    "BudgetGuard",
    "BudgetHold",
    "SpendBook",
    "budget_applies",
    "day_of",
    "earliest_period_start",
    "period_start",
]

_PERIODS: tuple[BudgetPeriod, ...] = ("daily", "weekly", "monthly", "none")
# Spend is a sum of floats (0.009 + 0.001 < 0.01): a nano-dollar of slack in comparisons.
_EPSILON_USD = 1e-9


def day_of(epoch: float) -> str:
    """The UTC day of an instant, as the ledger writes it (YYYY-MM-DD)."""
    return datetime.fromtimestamp(epoch, UTC).date().isoformat()


def period_start(period: BudgetPeriod, today: date) -> str:
    """The first day (YYYY-MM-DD) of the period that contains `today`; "" for `none`."""
    if period == "daily":
        return today.isoformat()
    if period == "weekly":
        return (today - timedelta(days=today.weekday())).isoformat()
    if period == "monthly":
        return today.replace(day=1).isoformat()
    return ""


def earliest_period_start(epoch: float) -> str:
    """The first day of the longest calendar period that contains `epoch` (its week may
    begin in the month before): older days only count towards budgets with no period."""
    today = datetime.fromtimestamp(epoch, UTC).date()
    return min(period_start("weekly", today), period_start("monthly", today))


class SpendBook:
    """Spend per owner and UTC day. Totals per period are summed once and remembered in
    the book (a new book starts with none)."""

    def __init__(self, daily: Mapping[Owner, Mapping[str, float]] | None = None) -> None:
        self._daily: dict[Owner, dict[str, float]] = {o: dict(d) for o, d in (daily or {}).items()}
        self._totals: dict[tuple[Owner, str], float] = {}

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, str, str, float]]) -> SpendBook:
        """From (kind, id, day, cost) rows, the daily rollups."""
        daily: dict[Owner, dict[str, float]] = {}
        for kind, owner_id, day, cost in rows:
            days = daily.setdefault((kind, owner_id), {})
            days[day] = days.get(day, 0.0) + cost
        return cls(daily)

    def plus(self, costs: Iterable[tuple[Owner, str, float]]) -> SpendBook:
        """A new book with each (owner, day, cost) added."""
        book = SpendBook(self._daily)
        for owner, day, cost in costs:
            days = book._daily.setdefault(owner, {})
            days[day] = days.get(day, 0.0) + cost
        return book

    def spent(self, owner: Owner, since_day: str) -> float:
        key = (owner, since_day)
        total = self._totals.get(key)
        if total is None:
            days = self._daily.get(owner, {})
            total = self._totals[key] = sum(c for d, c in days.items() if d >= since_day)
        return total


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """`exhausted`: who is out of budget ("key" or "team"), or None. `warnings`: who
    is past a soft budget; `first` the ones not warned before in this period."""

    exhausted: str | None = None
    warnings: tuple[str, ...] = ()
    first: tuple[str, ...] = ()


_OK = BudgetDecision()


@dataclass(slots=True)
class BudgetHold:
    """What one admitted request holds against its owners' budgets until it settles."""

    owners: tuple[Owner, ...]
    usd: float
    settled: bool = False
    # The most it may hold: its owners' largest budget (more refuses alike). An estimate
    # of max_tokens 9 * 10**18 ($9e13) added to and taken from an owner's other holds
    # would lose them to rounding (inf and NaN: all of them).
    cap: float = math.inf


class BudgetGuard:
    """Answers "may this caller spend?" from the current SpendBook and what this worker
    holds (reservations of requests in flight, costs not yet in the book); once `share`d,
    what the server's other workers hold too. `clock`: wall time (the periods);
    `monotonic`: the one every worker reads alike (when a book was read)."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.book = SpendBook()
        self._clock = clock
        self._monotonic = monotonic
        self._today: tuple[float, float, dict[BudgetPeriod, str]] = (0.0, 0.0, {})
        self._warned: set[tuple[Owner, str]] = set()
        # Written by the event loop (reserve, settle) and the writer thread (replace).
        self._lock = threading.Lock()
        self._held: dict[Owner, float] = {}
        self._unrecorded: dict[str, BudgetHold] = {}
        # How the ledger prices (set by its writer): reservations and settlements use it.
        self.prices: PriceTable | None = None
        self.models: Mapping[tuple[str, str], str] = {}
        # Shared (`share`): the server's table; the costs released here that stay in this
        # worker's column until every worker's book has them: (read at, owners, usd) in
        # the order of their reads, and their sum per owner.
        self._shared: SharedHolds | None = None
        self._lingering: deque[tuple[float, tuple[Owner, ...], float]] = deque()
        self._lingers: dict[Owner, float] = {}
        self._read_at = 0.0  # when the book in use was read (0: none from the database)

    def share(self, holds: SharedHolds) -> None:
        """Count holds with the server's other workers from now on (call it before the
        first request, from the thread that will admit them)."""
        with self._lock:
            holds.lock()
            try:
                for owner in self._held:
                    holds.put(owner, self._held[owner])
                if self._read_at:
                    holds.mark_read(self._read_at)
            finally:
                holds.unlock()
            self._shared = holds

    def book_read_started(self) -> float:
        """Call just before reading a book from the database, and pass the value to
        `replace` with it: the records committed before it are in that book."""
        return self._monotonic()

    def replace(self, book: SpendBook, recorded: Iterable[str] = (),
                read_at: float | None = None) -> None:
        """Swap in `book`, which has the records of the request ids `recorded`: their
        costs stop being held. `read_at`: `book_read_started` of a book read from the
        database (None: a book made here, `SpendBook.plus`)."""
        with self._lock:
            self.book = book
            if read_at is not None:
                self._read_at = read_at
            shared = self._shared
            if shared is None:
                self._release(recorded)
                return
            shared.lock()
            try:
                if read_at is not None:
                    shared.mark_read(read_at)
                released = self._release(recorded)
                stamp = self._monotonic() if read_at is None else read_at
                for hold in released:
                    self._lingering.append((stamp, hold.owners, hold.usd))
                    _add_to(self._lingers, hold.owners, hold.usd)
                self._publish(self._unlinger(shared), *(h.owners for h in released))
            finally:
                shared.unlock()

    def release(self, request_ids: Iterable[str]) -> None:
        """Stop holding the costs of `request_ids`, whose records will never reach the
        book (lost). Like `replace`, once per request id: a second release does nothing."""
        with self._lock:
            released = self._release(request_ids)
            shared = self._shared
            if shared is None or not released:
                return  # no flock for nothing (the event loop calls it with any records)
            shared.lock()
            try:
                self._publish(*(h.owners for h in released))
            finally:
                shared.unlock()

    def _release(self, request_ids: Iterable[str]) -> list[BudgetHold]:
        released = []
        for request_id in request_ids:
            hold = self._unrecorded.pop(request_id, None)
            if hold is not None:
                self._add(hold.owners, -hold.usd)
                released.append(hold)
        return released

    def _unlinger(self, shared: SharedHolds) -> tuple[Owner, ...]:
        """Let go of the lingering costs every worker's book has now (or that lingered
        `MAX_LINGER`); the owners whose columns changed."""
        lingering = self._lingering
        if not lingering:
            return ()
        # In every book (the oldest was read after it), or lingered long enough.
        through = max(shared.oldest_read(), self._monotonic() - MAX_LINGER)
        owners: list[Owner] = []
        while lingering and lingering[0][0] <= through:
            _, held_by, usd = lingering.popleft()
            _add_to(self._lingers, held_by, -usd)
            owners.extend(held_by)
        return tuple(owners)

    def _publish(self, *owner_groups: tuple[Owner, ...]) -> None:
        """Write this worker's column of each owner's row: what it holds and what lingers
        (shared, with its lock held)."""
        shared = self._shared
        assert shared is not None
        held, lingers = self._held, self._lingers
        for owner in {o for group in owner_groups for o in group}:
            shared.put(owner, held.get(owner, 0.0) + lingers.get(owner, 0.0))

    def spent(self, owner: Owner, period: BudgetPeriod) -> float:
        spent = self.book.spent(owner, self._period_start(period)) + self._held.get(owner, 0.0)
        if self._shared is not None:
            spent += self._shared.others(owner)  # a look, but under the lock in `reserve`
        return spent

    def _period_start(self, period: BudgetPeriod) -> str:
        """`period_start` of today (UTC), remembered for the day: every budgeted request
        asks, and a datetime and an isoformat cost ~15,000 instructions."""
        now = self._clock()
        start, end, starts = self._today
        if not start <= now < end:
            start = now - now % 86400
            today = datetime.fromtimestamp(start, UTC).date()
            starts = {p: period_start(p, today) for p in _PERIODS}
            self._today = start, start + 86400, starts
            # The warnings of periods that ended: kept, they grew by a mark per owner past
            # its soft budget each day, for as long as the server ran.
            current = set(starts.values())
            self._warned = {mark for mark in self._warned if mark[1] in current}
        return starts[period]

    def held(self, owner: Owner) -> float:
        """Reserved or spent by this worker and not yet in the book."""
        return self._held.get(owner, 0.0)

    def reserve(self, key: VirtualKey | None, team: Team | None,
                usd: float) -> BudgetHold | str | None:
        """Admit a request estimated at `usd`: None (no budget applies: nothing held),
        a BudgetHold, or who is exhausted ("key" or "team")."""
        owners = _budget_owners(key, team)
        if not owners:
            return None
        with self._lock:
            shared = self._shared
            if shared is not None:
                shared.lock()  # no other worker admits between the look and the hold
            try:
                cap = 0.0  # the most it may hold: its owners' largest budget
                for who, owner, limits in owners:
                    budget, soft = limits.budget_usd, limits.soft_budget_usd
                    if budget is not None:
                        if self.spent(owner, limits.budget_period) + _EPSILON_USD >= budget:
                            return who
                        cap = budget if budget > cap else cap
                    if soft is not None and soft > cap:
                        cap = soft
                if not 0.0 <= usd <= cap:  # inline: the usual estimate is within
                    usd = _bounded(usd, cap)
                hold = BudgetHold(tuple(owner for _, owner, _ in owners), usd, cap=cap)
                self._add(hold.owners, hold.usd)
                if shared is not None:
                    self._publish(hold.owners)
            finally:
                if shared is not None:
                    shared.unlock()
        return hold

    def settle(self, hold: BudgetHold, request_id: str, usd: float) -> None:
        """The request ended having cost `usd`: held under `request_id` until the book
        has its record (`replace`). Once per hold; a second call does nothing."""
        if hold.settled:
            return
        hold.settled = True
        if not 0.0 <= usd <= hold.cap:
            usd = _bounded(usd, hold.cap)
        with self._lock:
            self._add(hold.owners, usd - hold.usd)
            hold.usd = usd
            if usd > 0 and request_id:
                self._unrecorded[request_id] = hold
            else:
                hold.usd = 0.0
            shared = self._shared
            if shared is not None:
                shared.lock()
                try:
                    self._publish(hold.owners)
                finally:
                    shared.unlock()

    def pending(self) -> Collection[str]:
        """Request ids whose cost is held until the book has them."""
        return self._unrecorded.keys()

    def _add(self, owners: tuple[Owner, ...], usd: float) -> None:
        _add_to(self._held, owners, usd)

    def check(self, key: VirtualKey | None, team: Team | None) -> BudgetDecision:
        """The key's and the team's budgets; both must allow the request."""
        if key is None:
            return _OK
        key_limits, team_limits = key.limits, team.limits if team is not None else None
        if not _budgeted(key_limits) and (team_limits is None or not _budgeted(team_limits)):
            return _OK
        warnings: list[str] = []
        first: list[str] = []
        for who, owner, limits in (("key", ("key", key.id), key_limits),
                                   ("team", ("team", team.id) if team else None, team_limits)):
            if owner is None or limits is None or not _budgeted(limits):
                continue
            spent = self.spent(owner, limits.budget_period)
            spent += _EPSILON_USD
            if limits.budget_usd is not None and spent >= limits.budget_usd:
                return BudgetDecision(exhausted=who)
            if limits.soft_budget_usd is not None and spent >= limits.soft_budget_usd:
                warnings.append(who)
                mark = (owner, self._period_start(limits.budget_period))
                if mark not in self._warned:
                    self._warned.add(mark)
                    first.append(who)
        return BudgetDecision(None, tuple(warnings), tuple(first)) if warnings else _OK


def _add_to(amounts: dict[Owner, float], owners: tuple[Owner, ...], usd: float) -> None:
    """Add `usd` to each owner's amount; one left at zero (or below) is dropped."""
    for owner in owners:
        left = amounts.get(owner, 0.0) + usd
        if left > _EPSILON_USD:
            amounts[owner] = left
        else:
            amounts.pop(owner, None)


def _bounded(usd: float, cap: float) -> float:
    """`usd` within [0, `cap`]; NaN is `cap` (an amount not known is the most)."""
    if usd >= 0.0:
        return usd if usd <= cap else cap
    return 0.0 if usd < 0.0 else cap


def _budget_owners(key: VirtualKey | None,
                   team: Team | None) -> list[tuple[str, Owner, Limits]]:
    """The (who, owner, limits) whose budget (hard or soft) applies to this caller."""
    if key is None:
        return []
    owners: list[tuple[str, Owner, Limits]] = []
    if _budgeted(key.limits):
        owners.append(("key", ("key", key.id), key.limits))
    if team is not None and _budgeted(team.limits):
        owners.append(("team", ("team", team.id), team.limits))
    return owners


def budget_applies(key: VirtualKey, team: Team | None) -> bool:
    """Whether a key or its team has a budget (hard or soft): most keys have none, and
    then nothing about budgets needs doing for their requests."""
    return _budgeted(key.limits) or (team is not None and _budgeted(team.limits))


def _budgeted(limits: Limits) -> bool:
    return limits.budget_usd is not None or limits.soft_budget_usd is not None
