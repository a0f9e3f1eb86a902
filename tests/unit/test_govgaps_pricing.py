"""A model name served by a pool of deployments priced differently (review of issue 13):
the budget hold and the `model_not_priced` refusal read the pool's first deployment
alone, where the balancer may send the request to any of them."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.budgethold import ModelNotPriced, require_price
from azure_openai_proxy.gateway.governed import hold, price_names
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.settings import DeploymentSettings

# 1,000 prompt characters (250 tokens) and 1,000 output tokens
BODY = {"model": "smart", "messages": [{"role": "user", "content": "x" * 1000}],
        "max_tokens": 1000}


def _pool(*deployments: str) -> Pool:
    return Pool("smart", tuple(
        DeploymentSettings(model_name="smart", deployment_name=name,
                           endpoint=f"https://r{i}.openai.azure.com/", api_key="k")
        for i, name in enumerate(deployments)))


def _caller(limits: Limits) -> Caller:
    key = VirtualKey("k1", "k", "hash", "sk-aop-abc", limits=limits)
    return Caller(passthrough_key=None, key=key, team=None)


def _guard() -> BudgetGuard:
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    return guard


def _held_usd(pool: Pool) -> float:
    held = hold(RateLimiter(lambda: 1000.0), _guard(), _caller(Limits(budget_usd=100.0)),
                BODY, (pool, "smart"), "chat/completions", 1024)
    assert held[1] is not None
    return held[1].usd


def test_the_hold_is_priced_at_the_dearest_deployment_of_the_pool() -> None:
    o1 = (250 + 4) * 15.00 / 1e6 + 1000 * 60.00 / 1e6  # the chat format's 4 a message
    assert _held_usd(_pool("o1")) == pytest.approx(o1)
    # whichever comes first, the balancer may pick o1
    assert _held_usd(_pool("gpt-4o-mini", "o1")) == pytest.approx(o1)
    assert _held_usd(_pool("o1", "gpt-4o-mini")) == pytest.approx(o1)


def test_a_pool_with_any_unpriced_deployment_is_refused_to_a_hard_budget() -> None:
    with pytest.raises(ModelNotPriced):
        _held_usd(_pool("gpt-4o", "team-finetune"))
    guard, caller = _guard(), _caller(Limits(budget_usd=100.0))
    with pytest.raises(ModelNotPriced):  # a Realtime session's check, before it opens
        require_price(guard, caller, price_names(_pool("gpt-4o", "team-finetune"), "smart"))
    require_price(guard, caller, price_names(_pool("gpt-4o", "o1"), "smart"))
    # a soft budget only warns: served, held at the priced member's rate
    soft = hold(RateLimiter(lambda: 1000.0), guard, _caller(Limits(soft_budget_usd=1.0)),
                BODY, (_pool("gpt-4o", "team-finetune"), "smart"), "chat/completions", 1024)
    assert soft[1] is not None


def test_a_priced_client_model_prices_every_member_alike() -> None:
    """The ledger prices a record by the client's model first: a priced name sent for a
    pool is what every member costs."""
    pool = Pool("gpt-4o", (
        DeploymentSettings(model_name="gpt-4o", deployment_name="team-finetune",
                           endpoint="https://r.openai.azure.com/", api_key="k"),))
    held = hold(RateLimiter(lambda: 1000.0), _guard(), _caller(Limits(budget_usd=100.0)),
                {**BODY, "model": "gpt-4o"}, (pool, "gpt-4o"), "chat/completions", 1024)
    assert held[1] is not None
    assert held[1].usd == pytest.approx(254 * 2.50 / 1e6 + 1000 * 10.00 / 1e6)
