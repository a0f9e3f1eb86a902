from __future__ import annotations

from datetime import date

import pytest

from azure_openai_proxy.governance.budget import (
    BudgetDecision,
    BudgetGuard,
    BudgetHold,
    SpendBook,
    day_of,
    earliest_period_start,
    period_start,
)
from azure_openai_proxy.governance.model import Limits, Team, VirtualKey

NOW = 1_796_212_800.0  # 2026-12-02T12:00:00Z, a Wednesday


def key(limits: Limits, team: str | None = None) -> VirtualKey:
    return VirtualKey(id="k1", name="k", secret_hash="-", prefix="sk-aop-", team_id=team, limits=limits)


def test_periods_are_utc_calendar_periods() -> None:
    today = date(2026, 12, 2)
    assert day_of(NOW) == "2026-12-02"
    assert period_start("daily", today) == "2026-12-02"
    assert period_start("weekly", today) == "2026-11-30"  # Monday, across a month's end
    assert period_start("monthly", today) == "2026-12-01"
    assert period_start("none", today) == ""


@pytest.mark.parametrize(("period", "spent"), [
    ("daily", 1.0), ("weekly", 7.0), ("monthly", 5.0), ("none", 15.0)])
def test_spend_counts_only_the_days_of_the_period(period: str, spent: float) -> None:
    book = SpendBook.from_rows([("key", "k1", "2026-12-02", 1.0), ("key", "k1", "2026-11-30", 2.0),
                                ("key", "k1", "2026-12-01", 4.0), ("key", "k1", "2026-11-01", 8.0),
                                ("key", "other", "2026-12-02", 100.0)])
    guard = BudgetGuard(clock=lambda: NOW)
    guard.replace(book)
    assert guard.spent(("key", "k1"), period) == spent  # type: ignore[arg-type]


def test_a_key_at_its_budget_is_exhausted_and_below_it_is_not() -> None:
    guard = BudgetGuard(clock=lambda: NOW)
    limited = key(Limits(budget_usd=0.01, budget_period="daily"))
    assert guard.check(limited, None) == BudgetDecision()
    guard.replace(guard.book.plus([(("key", "k1"), "2026-12-02", 0.009)]))
    assert guard.check(limited, None).exhausted is None
    guard.replace(guard.book.plus([(("key", "k1"), "2026-12-02", 0.001)]))
    assert guard.check(limited, None).exhausted == "key"
    # yesterday's spend does not count against today's budget
    guard.replace(SpendBook.from_rows([("key", "k1", "2026-12-01", 5.0)]))
    assert guard.check(limited, None).exhausted is None


def test_a_team_budget_binds_every_key_of_the_team() -> None:
    team = Team(id="t1", name="t", limits=Limits(budget_usd=1.0, budget_period="monthly"))
    guard = BudgetGuard(clock=lambda: NOW)
    guard.replace(SpendBook.from_rows([("team", "t1", "2026-12-01", 1.5)]))
    assert guard.check(key(Limits(), "t1"), team).exhausted == "team"
    assert guard.check(key(Limits(budget_usd=100.0), "t1"), team).exhausted == "team"


def test_a_soft_budget_warns_once_per_period_and_serves() -> None:
    clock = [NOW]
    guard = BudgetGuard(clock=lambda: clock[0])
    soft = key(Limits(soft_budget_usd=1.0, budget_usd=10.0, budget_period="daily"))
    guard.replace(SpendBook.from_rows([("key", "k1", "2026-12-02", 2.0),
                                       ("key", "k1", "2026-12-03", 2.0)]))
    assert guard.check(soft, None) == BudgetDecision(None, ("key",), ("key",))
    assert guard.check(soft, None) == BudgetDecision(None, ("key",), ())
    clock[0] += 86400  # the next day: warned again, once
    assert guard.check(soft, None).first == ("key",)


def test_no_key_or_no_budget_costs_nothing() -> None:
    guard = BudgetGuard(clock=lambda: NOW)
    assert guard.check(None, None) is guard.check(key(Limits(rpm=5)), None)


def test_a_reservation_holds_the_budget_until_the_book_has_the_record() -> None:
    guard = BudgetGuard(clock=lambda: NOW)
    team = Team(id="t1", name="t", limits=Limits(budget_usd=1.0, budget_period="daily"))
    limited = key(Limits(budget_usd=0.01, budget_period="daily"), "t1")
    hold = guard.reserve(limited, team, 0.02)
    assert isinstance(hold, BudgetHold)
    assert guard.reserve(limited, team, 0.02) == "key"  # the first one's estimate holds it
    assert guard.check(limited, team).exhausted == "key"
    guard.settle(hold, "r1", 0.004)  # it cost less: the rest is given back
    assert guard.held(("key", "k1")) == pytest.approx(0.004)
    assert guard.held(("team", "t1")) == pytest.approx(0.004)
    second = guard.reserve(limited, team, 0.02)
    assert isinstance(second, BudgetHold)
    guard.settle(second, "r2", 0.0)  # nothing spent (an error answer): nothing held
    guard.settle(second, "r2", 5.0)  # settled once only
    assert guard.held(("key", "k1")) == pytest.approx(0.004)
    # The writer's book now has r1: its cost is counted once, from the book.
    guard.replace(SpendBook.from_rows([("key", "k1", "2026-12-02", 0.004)]), ["r1"])
    assert guard.held(("key", "k1")) == 0.0
    assert guard.spent(("key", "k1"), "daily") == pytest.approx(0.004)
    assert set(guard.pending()) == set()


def test_a_key_without_a_budget_holds_nothing() -> None:
    guard = BudgetGuard(clock=lambda: NOW)
    assert guard.reserve(key(Limits(rpm=5)), None, 1.0) is None
    assert guard.reserve(None, None, 1.0) is None


def test_older_spend_counts_only_for_budgets_without_a_period() -> None:
    book = SpendBook.from_rows([("key", "k1", "0000-00-00", 8.0), ("key", "k1", "2026-12-02", 1.0)])
    assert book.spent(("key", "k1"), "") == 9.0
    assert book.spent(("key", "k1"), "2026-12-01") == 1.0
    assert earliest_period_start(NOW) == "2026-11-30"  # this week began last month


def test_the_periods_move_on_at_midnight_utc() -> None:
    """The guard remembers today's period starts for the day (every budgeted request
    asks): at midnight UTC a new day's, week's and month's periods begin."""
    clock = [1_796_169_599.0]  # 2026-12-01T23:59:59Z, a Tuesday
    guard = BudgetGuard(clock=lambda: clock[0])
    limited = key(Limits(budget_usd=1.0, budget_period="daily"))
    guard.replace(SpendBook.from_rows([("key", "k1", "2026-12-01", 1.0),
                                       ("key", "k1", "2026-11-30", 2.0)]))
    assert guard.check(limited, None).exhausted == "key"
    assert guard.spent(("key", "k1"), "weekly") == 3.0
    assert guard.spent(("key", "k1"), "monthly") == 1.0
    clock[0] += 1  # 2026-12-02T00:00:00Z
    assert guard.check(limited, None).exhausted is None
    assert guard.spent(("key", "k1"), "weekly") == 3.0
    clock[0] += 5 * 86400  # Monday 2026-12-07: a new week
    assert guard.spent(("key", "k1"), "weekly") == 0.0
    assert guard.spent(("key", "k1"), "none") == 3.0
    clock[0] -= 6 * 86400 + 1  # a clock set back: the day it says counts
    assert guard.check(limited, None).exhausted == "key"


@pytest.mark.parametrize("amount", [9e15, float("inf"), float("nan"), -5.0])
def test_an_amount_out_of_bounds_never_takes_the_other_holds_with_it(amount: float) -> None:
    # max_tokens: 9 * 10**18 (accepted) holds $9e15 at $1,000 per 1M: 0.9 + 9e15 - 9e15
    # is 1.0, a phantom for good. An inf amount: inf - inf is NaN, and a NaN sum dropped the
    # owner's whole amount: the $0.90 still in flight was no longer held (bypassed).
    guard = BudgetGuard(clock=lambda: NOW)
    limited = key(Limits(budget_usd=1.0, budget_period="daily"))
    in_flight = guard.reserve(limited, None, 0.9)
    assert isinstance(in_flight, BudgetHold)
    odd = guard.reserve(limited, None, amount)
    assert isinstance(odd, BudgetHold)
    assert 0.9 <= guard.held(("key", "k1")) <= 1.9  # bounded by the budget: no inf
    guard.settle(odd, "r-odd", 0.0)  # Azure refused it: it cost nothing
    assert guard.held(("key", "k1")) == pytest.approx(0.9)
    assert guard.reserve(limited, None, 0.05) is not None
    odd = guard.reserve(limited, None, 0.0)
    assert isinstance(odd, BudgetHold)
    guard.settle(odd, "r-odd2", amount)  # a cost out of bounds, as settled
    guard.release(["r-odd2"])
    assert guard.held(("key", "k1")) == pytest.approx(0.95)
