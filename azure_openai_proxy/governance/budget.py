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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from azure_openai_proxy.governance.model import BudgetPeriod, Limits, Team, VirtualKey

__all__ = ["BudgetDecision", "BudgetGuard", "SpendBook", "day_of", "period_start"]

Owner = tuple[str, str]  # ("key", key id) or ("team", team id)
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


class BudgetGuard:
    """Answers "may this caller spend?" from the current SpendBook."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.book = SpendBook()
        self._clock = clock
        self._warned: set[tuple[Owner, str]] = set()

    def replace(self, book: SpendBook) -> None:
        self.book = book

    def spent(self, owner: Owner, period: BudgetPeriod) -> float:
        today = datetime.fromtimestamp(self._clock(), UTC).date()
        return self.book.spent(owner, period_start(period, today))

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
                today = datetime.fromtimestamp(self._clock(), UTC).date()
                mark = (owner, period_start(limits.budget_period, today))
                if mark not in self._warned:
                    self._warned.add(mark)
                    first.append(who)
        return BudgetDecision(None, tuple(warnings), tuple(first)) if warnings else _OK


def _budgeted(limits: Limits) -> bool:
    return limits.budget_usd is not None or limits.soft_budget_usd is not None
