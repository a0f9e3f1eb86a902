"""What a budgeted request holds at admission (gateway/budgethold.py reserve_budget)."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import BudgetExhausted
from azure_openai_proxy.gateway.budgethold import reserve_budget, settle_budget
from azure_openai_proxy.governance.budget import BudgetGuard, BudgetHold
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord

NOW = 1_796_212_800.0


def guard() -> BudgetGuard:
    budgets = BudgetGuard(clock=lambda: NOW)
    budgets.prices = PriceTable.shipped()
    return budgets


def caller(budget: float | None = 1.0) -> Caller:
    return Caller(None, VirtualKey(id="k1", name="k", secret_hash="-", prefix="sk-aop-",
                                   limits=Limits(budget_usd=budget, budget_period="daily")))


def test_a_chat_request_holds_its_prompt_and_max_tokens_priced() -> None:
    budgets = guard()
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 1000}
    hold = reserve_budget(budgets, caller(), body, ("gpt-4o",), "chat/completions")
    assert isinstance(hold, BudgetHold)
    # gpt-4o: 104 prompt tokens (400 chars / 4 + 4 for the message) at $2.50, 1,000 at $10
    assert hold.usd == pytest.approx((104 * 2.50 + 1000 * 10.00) / 1e6)


def test_images_and_speech_hold_their_units() -> None:
    budgets = guard()
    images = reserve_budget(budgets, caller(), {"prompt": "a", "n": 3}, ("dall-e-3",),
                            "images/generations")
    assert images is not None and images.usd == pytest.approx(3 * 0.04)
    speech = reserve_budget(budgets, caller(), {"input": "y" * 1000}, ("tts",), "audio/speech")
    assert speech is not None and speech.usd == pytest.approx(1000 * 15.00 / 1e6)


def test_the_hold_refuses_the_next_request_and_settling_gives_the_rest_back() -> None:
    budgets = guard()
    first = reserve_budget(budgets, caller(0.1), {"prompt": "a", "n": 3}, ("dall-e-3",),
                           "images/generations")
    with pytest.raises(BudgetExhausted):
        reserve_budget(budgets, caller(0.1), {"prompt": "a"}, ("dall-e-3",), "images/generations")
    ended = RequestRecord("r1", "POST", route="images/generations", model="dall-e-3",
                          status=500)  # Azure failed: it cost nothing
    settle_budget(budgets, first, ended)
    assert budgets.held(("key", "k1")) == 0.0
    assert reserve_budget(budgets, caller(0.1), {"prompt": "a"}, ("dall-e-3",),
                          "images/generations") is not None


def test_a_key_without_a_budget_holds_nothing() -> None:
    assert reserve_budget(guard(), caller(None), {"prompt": "a"}, ("gpt-4o",)) is None
