"""The names a body runs on beside its `model`, read from plain dicts: a grader's model
judged as the base model Azure reads (its release's date aside), only a body's graders
walked (in any letters), and odd shapes judged without an exception."""

from __future__ import annotations

from typing import Any

import pytest

from azure_openai_proxy.errors import MalformedBody
from azure_openai_proxy.gateway.batchcheck import _graders
from azure_openai_proxy.gateway.governed import values_named
from azure_openai_proxy.governance.keys import release_allowed


@pytest.mark.parametrize(("patterns", "name", "allowed"), [
    (("o3-mini",), "o3-mini-2025-01-31", True),
    (("o3-mini",), "o3-mini", True),
    (("o3*",), "o3-mini-2025-01-31", True),
    (("gpt-4o",), "gpt-4o-2024-08-06", True),
    (("gpt-4o",), "o3-mini-2025-01-31", False),
    (("o3-mini",), "o3-mini-high", False),
    (("o3-mini",), "o3-mini-2025-01-31-x", False),
    (("gpt-4o-2024-08-06",), "gpt-4o-2024-11-20", False),
    ((), "anything", True),
])
def test_a_grader_model_is_judged_by_its_name_and_release(
        patterns: tuple[str, ...], name: str, allowed: bool) -> None:
    assert release_allowed(patterns, name) is allowed


def _grader(model: str) -> dict[str, Any]:
    return {"type": "score_model", "name": "g", "model": model}


def test_only_the_graders_are_read_in_any_letters() -> None:
    run = "fine_tuning/alpha/graders/run"
    assert values_named(_graders({"Grader": _grader("a"), "item": {"model": "b"}}, run),
                        "model") == ["a"]
    method = {"type": "reinforcement", "reinforcement": {
        "GRADER": {"type": "multi", "graders": {"x": _grader("c"), "y": _grader("d")}},
        "response_format": {"json_schema": {"schema": {"examples": [{"model": "Civic"}]}}}}}
    named = values_named(_graders({"model": "o4-mini", "method": method}, "fine_tuning/jobs"),
                         "model")
    assert sorted(named) == ["c", "d"]


@pytest.mark.parametrize("body", [
    {"grader": None}, {"grader": "o3-mini"}, {"grader": [_grader("a"), 5, None]},
    {"method": "reinforcement"}, {"method": {"reinforcement": None}},
    {"method": {"reinforcement": [{"grader": _grader("a")}]}}, {"method": None}, {},
])
def test_odd_shapes_are_read_without_an_exception(body: dict[str, Any]) -> None:
    for operation in ("fine_tuning/alpha/graders/run", "fine_tuning/jobs"):
        assert all(isinstance(name, str)
                   for name in values_named(_graders(body, operation), "model"))


def test_too_many_values_are_refused_not_judged_in_part() -> None:
    with pytest.raises(MalformedBody):
        values_named([{"x": 1}] * 20_000, "deployment_name")
    assert values_named({"a": [{"deployment_name": 5}, {"Deployment_Name": "e"}]},
                        "deployment_name") == ["e"]
