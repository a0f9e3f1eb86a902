"""`price_names` (gateway/governed.py): a budget's hold is what the ledger will charge
the dearest deployment the balancer may pick, each deployment priced by the ledger's own
rule (`ledgerrows.record_cost`); and the Realtime refusal (`require_price`) and the chat
hold (`reserve_budget`) agree on which pools they refuse."""

from __future__ import annotations

import pytest

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.gateway.budgethold import ModelNotPriced, require_price
from azure_openai_proxy.gateway.governed import hold, price_names
from azure_openai_proxy.gateway.ledgerrows import record_cost
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.model import Limits, VirtualKey
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool
from azure_openai_proxy.settings import DeploymentSettings

# 1,000 prompt characters (250 tokens, and the chat format's 4 a message), 1,000 out
BODY = {"messages": [{"role": "user", "content": "x" * 1000}], "max_tokens": 1000}
MINI = 254 * 0.15 / 1e6 + 1000 * 0.60 / 1e6


def _pool(model: str, *deployments: tuple[str, str]) -> Pool:
    """A pool found by `model`, its deployments given as (model_name, deployment_name)."""
    return Pool(model, tuple(
        DeploymentSettings(model_name=served, deployment_name=name,
                           endpoint=f"https://r{i}.openai.azure.com/", api_key="k")
        for i, (served, name) in enumerate(deployments)))


def _caller(limits: Limits) -> Caller:
    return Caller(passthrough_key=None, key=VirtualKey("k1", "k", "hash", "sk-aop-abc",
                                                       limits=limits), team=None)


def _guard() -> BudgetGuard:
    guard = BudgetGuard(lambda: 1000.0)
    guard.prices = PriceTable.shipped()
    return guard


def _held(pool: Pool, client: str, limits: Limits | None = None) -> float:
    held = hold(RateLimiter(lambda: 1000.0), _guard(),
                _caller(limits or Limits(budget_usd=100.0)), {**BODY, "model": client},
                (pool, client), "chat/completions", 1024)
    assert held[1] is not None
    return held[1].usd


def _ledger_usd(pool: Pool, client: str) -> list[float]:
    """What the ledger charges the bench body's tokens (254 in, 1,000 out) on each of
    `pool`'s deployments."""
    models = {(d.endpoint, d.deployment_name): d.model_name for d in pool.deployments}
    charged = []
    for deployment in pool.deployments:
        record = RequestRecord("r", "POST", route="chat/completions", model=client,
                               deployment=deployment.deployment_name,
                               endpoint=deployment.endpoint, status=200,
                               usage={"prompt_tokens": 254, "completion_tokens": 1000})
        usd, priced = record_cost(record, PriceTable.shipped(), models, (254, 0, 1000, 0))
        assert priced
        charged.append(usd)
    return charged


@pytest.mark.parametrize(("client", "deployments"), [
    # a gpt-4o-mini deployment still named after the model it once served
    ("gpt-4o-mini", (("gpt-4o-mini", "gpt-4"),)),
    ("gpt-4o-mini", (("gpt-4o-mini", "gpt-4o-mini"), ("gpt-4o-mini", "o1"))),
    ("gpt-4o-mini", (("gpt-4o-mini", "mini-east"), ("gpt-4o", "gpt-4o"))),
    ("prod", (("gpt-4o-mini", "prod"), ("o1", "prod"))),  # found by a deployment's name
    ("smart", (("smart", "gpt-4o"), ("smart", "o1"))),  # priced by the deployments' names
    ("o1", (("gpt-4o-mini", "o1"),)),  # a priced client name beside a cheaper model
    # a client name found by the fallback (no price of its own): the model before the name
    ("gpt-4o-mini.", (("gpt-4o-mini", "gpt-4"),)),
    ("gpt-4o-mini.", (("gpt-4o-mini", "gpt-4"), ("gpt-4o-mini", "mini-east"))),
])
def test_a_hold_is_what_the_ledger_charges_the_dearest_deployment(
        client: str, deployments: tuple[tuple[str, str], ...]) -> None:
    # The review of this branch: holding a deployment at the dearest of its names held
    # the first case at gpt-4's price, 106 times what the ledger then charged, so a few
    # concurrent requests filled a budget with holds while nothing was spent.
    pool = _pool(client, *deployments)
    assert _held(pool, client) == pytest.approx(max(_ledger_usd(pool, client)))
    assert _held(pool, client, Limits(soft_budget_usd=1.0)) == pytest.approx(
        max(_ledger_usd(pool, client)))


def test_a_pool_of_one_model_is_held_as_before() -> None:
    # names with no price of their own (mini-east) or the same price: the client's
    pool = _pool("gpt-4o-mini", ("gpt-4o-mini", "mini-east"),
                 ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"))
    assert _held(pool, "gpt-4o-mini") == pytest.approx(MINI)
    assert _held(_pool("gpt-4o-mini", ("gpt-4o-mini", "mini-east")),
                 "gpt-4o-mini") == pytest.approx(MINI)
    assert price_names(_pool("gpt-4o-mini", ("gpt-4o-mini", "gpt-4o-mini")),
                       "gpt-4o-mini") == (("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"),)


@pytest.mark.parametrize(("deployments", "refused"), [
    ((("smart", "gpt-4o"), ("smart", "team-ft")), True),  # one member has no price
    ((("smart", "gpt-4o"), ("smart", "o1")), False),
    ((("smart", "team-ft"),), True),
    ((("gpt-4o", "team-ft"),), False),  # priced by its client name
])
def test_realtime_and_chat_refuse_the_same_pools(
        deployments: tuple[tuple[str, str], ...], refused: bool) -> None:
    pool = _pool("smart", *deployments)
    caller = _caller(Limits(budget_usd=100.0))
    client = deployments[0][0]
    outcomes = []
    for check in (lambda: require_price(_guard(), caller, price_names(pool, client)),
                  lambda: _held(pool, client)):
        try:
            check()
            outcomes.append(False)
        except ModelNotPriced as exc:
            assert exc.status == 403 and exc.code == "model_not_priced"
            assert "has no price in this gateway" in exc.message
            outcomes.append(True)
    assert outcomes == [refused, refused]
