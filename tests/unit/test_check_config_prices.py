"""`check-config` with governance on names the deployments whose model has no price: their
records cost $0 and keys with a budget are refused them (gateway/budgethold.py)."""

from __future__ import annotations

from typing import Any

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.runtime.runner import describe


def _settings(**extra: Any) -> Any:
    deployments = [{"model_name": model, "deployment_name": deployment,
                    "endpoint": "https://a.openai.azure.com/", "api_key": "k"}
                   for model, deployment in (("gpt-4o", "gpt-4o"), ("team-ft", "ft-1"))]
    return load_settings({"deployment_config": deployments, "allow_open": True, **extra}, {})


def test_an_unpriced_model_is_named_when_governance_is_on(tmp_path: Any) -> None:
    text = describe(_settings(database=f"sqlite:///{tmp_path / 'gw.db'}"))
    [warning] = [line for line in text.splitlines() if "no price" in line]
    assert "team-ft (deployment ft-1)" in warning and "`prices:`" in warning
    priced = describe(_settings(database=f"sqlite:///{tmp_path / 'gw.db'}",
                                prices={"team-ft": {"input": 1.0, "output": 2.0}}))
    assert "no price" not in priced


def test_no_price_warning_without_governance() -> None:
    assert "no price" not in describe(_settings())
