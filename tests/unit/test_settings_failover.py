"""The failover, metrics and reload keys of the config file, validated."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.config import ConfigError, load_settings

POOL = {"gpt-4o": [
    {"deployment_name": "east", "endpoint": "https://east.example.com", "api_key": "k1", "weight": 3,
     "priority": 1, "tpm": 30000},
    {"deployment_name": "west", "endpoint": "https://west.example.com", "api_key": "k2", "priority": 2},
]}


def load(**extra: Any) -> Any:
    return load_settings({"models": POOL, "client_keys": ["c"], **extra}, {})


def test_failover_keys_parse() -> None:
    settings = load(routing_strategy="least-busy", max_attempts=4, retry_budget_seconds=12,
                    circuit_failures=2, circuit_open_seconds=7.5, cooldown_seconds=3,
                    latency_exploration=0.25, watch_config=True, metrics=False)
    assert settings.routing_strategy == "least-busy"
    assert (settings.circuit_failures, settings.circuit_open_seconds) == (2, 7.5)
    assert settings.cooldown_seconds == 3 and settings.latency_exploration == 0.25
    assert settings.watch_config and not settings.metrics
    east, west = settings.deployments
    assert (east.weight, east.priority, east.tpm) == (3, 1, 30000)
    assert west.priority == 2


@pytest.mark.parametrize(("key", "value", "message"), [
    ("routing_strategy", "round-robin", "routing_strategy"),
    ("circuit_failures", 0, "circuit_failures"),
    ("circuit_open_seconds", 0, "circuit_open_seconds"),
    ("cooldown_seconds", -1, "cooldown_seconds"),
    ("latency_exploration", 1.5, "latency_exploration"),
    ("max_attempts", 0, "max_attempts"),
])
def test_bad_values_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(**{key: value})


def test_a_bad_weight_names_the_deployment() -> None:
    pool = {"gpt-4o": [{**POOL["gpt-4o"][0], "weight": 0}]}
    with pytest.raises(ConfigError, match=r"gpt-4o.*weight"):
        load_settings({"models": pool, "client_keys": ["c"]}, {})
