"""A soft budget's warning, once per period, remembers only the periods that are current
(govacct audit): each day's marks of every owner past its soft budget were kept for as
long as the server ran."""

from __future__ import annotations

import time

from azure_openai_proxy.governance.budget import BudgetGuard, SpendBook, day_of
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _key(name: str, period: str) -> VirtualKey:
    return VirtualKey(id=name, name=name, secret_hash="h" + name, prefix="sk-aop-x",
                      team_id="t", created_at=0.0,
                      limits=Limits(soft_budget_usd=1.0, budget_period=period))  # type: ignore[arg-type]


def test_warnings_are_once_a_period_and_forgotten_with_it() -> None:
    clock = Clock(1_767_225_600.0)  # 2026-01-01 00:00 UTC, a Thursday
    guard = BudgetGuard(clock=clock)
    keys = [_key(f"k{i}", period) for i, period in
            enumerate(("daily", "daily", "weekly", "monthly"))]
    team = Team(id="t", name="t", created_at=0.0, limits=Limits(soft_budget_usd=1.0))
    for day in range(400):
        today = day_of(clock.now)
        guard.replace(SpendBook({("key", k.id): {today: 2.0} for k in keys}
                                | {("team", "t"): {today: 2.0}}))
        for key in keys:
            first = guard.check(key, team).first
            assert guard.check(key, team).first == ()  # once in its period
            assert ("key" in first) == (key.limits.budget_period == "daily" or day == 0 or (
                key.limits.budget_period == "weekly" and time.gmtime(clock.now).tm_wday == 0) or (
                key.limits.budget_period == "monthly" and time.gmtime(clock.now).tm_mday == 1))
        clock.now += 86400
    # marks of the current periods' starts alone (today, this week's, this month's, and
    # "" for none): at most four an owner, where main kept one a day for each daily key
    assert len(guard._warned) <= 4 * (len(keys) + 1)
