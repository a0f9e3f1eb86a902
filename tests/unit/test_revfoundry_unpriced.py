"""A hard budget's `model_not_priced` refusal for a pool one of whose members has no
price (review of the foundry branch: a Foundry model beside a priced Azure OpenAI one):
the message names the client's model and the member's deployment the administrator
must price, not the client's model alone, which may well have a price."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from azure_openai_proxy.gateway.budgethold import ModelNotPriced, require_price
from azure_openai_proxy.gateway.governed import price_names
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.routing import Pool
from tests.unit.test_fixes14_pricing import _caller, _guard, _held, _pool

POOL = _pool("smart", ("smart", "gpt-4o"), ("smart", "team-ft"), ("smart", "o1"))


def _checks(pool: Pool, client: str = "smart") -> list[Callable[[], object]]:
    caller = _caller(Limits(budget_usd=100.0))
    return [lambda: require_price(_guard(), caller, price_names(pool, client)),
            lambda: _held(pool, client)]


@pytest.mark.parametrize("check", range(2), ids=["realtime", "chat"])
def test_the_refusal_names_the_member_without_a_price(check: int) -> None:
    with pytest.raises(ModelNotPriced) as caught:
        _checks(POOL)[check]()
    message = caught.value.message
    assert "`smart`" in message and "`team-ft`" in message
    assert "gpt-4o" not in message and "o1" not in message  # priced: not the missing one
    assert "has no price in this gateway" in message


def test_a_deployment_named_as_its_model_is_named_once() -> None:
    for check in _checks(_pool("team-ft", ("team-ft", "team-ft")), "team-ft"):
        with pytest.raises(ModelNotPriced) as caught:
            check()
        assert caught.value.message.count("team-ft") == 1
