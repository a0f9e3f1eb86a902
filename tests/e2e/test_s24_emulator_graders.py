"""The emulator answers a grader run and a grader validation as Azure does (they were a
404 `Resource not found`, so a grader run through the gateway could never succeed in a
test): from 2025-04-01-preview, a model grader on a base model of Azure's list with no
deployment of it, OpenAI's GraderRunResponse back (the official SDK parses it); a model
grader on another model, a grader of no known type, a bad formula: a 400."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import AZURE_KEY, Emulator


def _post(emulator: Emulator, path: str, body: Any,
          version: str = "2025-04-01-preview") -> httpx.Response:
    return httpx.post(f"{emulator.url}/openai/fine_tuning/alpha/graders/{path}",
                      params={"api-version": version}, json=body,
                      headers={"api-key": AZURE_KEY}, timeout=10)


def _score(model: str) -> dict[str, Any]:
    return {"type": "score_model", "name": "s", "model": model, "range": [0, 5],
            "input": [{"role": "user", "content": "Grade {{ sample.output_text }}"}]}


def test_a_grader_run_is_answered_as_azure_does(emulator: Emulator) -> None:
    check = {"type": "string_check", "name": "c", "operation": "eq",
             "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
    multi = {"type": "multi", "name": "m", "calculate_output": "(c + s) / 2 ^ 1",
             "graders": {"c": check, "s": _score("o3-mini-2025-01-31")}}
    answer = _post(emulator, "run", {"grader": multi, "model_sample": "4",
                                     "item": {"answer": "4"}})
    assert answer.status_code == 200, answer.text  # main: 404 Resource not found
    body = answer.json()
    assert body["reward"] == 3.0 and body["sub_rewards"] == {"c": 1.0, "s": 5.0}
    usage = body["model_grader_token_usage_per_model"]["o3-mini-2025-01-31"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert body["metadata"]["type"] == "multi" and body["metadata"]["token_usage"] > 0
    wrong = _post(emulator, "run", {"grader": check, "model_sample": "5",
                                    "item": {"answer": "4"}})
    assert wrong.json()["reward"] == 0.0
    assert _post(emulator, "validate", {"grader": check}).json() == {"grader": check}


def test_a_grader_azure_does_not_run_is_refused(emulator: Emulator) -> None:
    for grader, param in (
            (_score("o3-mini"), "grader.model"),  # a model's name without its release
            (_score("gpt-4o"), "grader.model"),  # a deployment's name: none is looked up
            ({"type": "multi", "name": "m", "calculate_output": "a + __import__('os')",
              "graders": {"a": _score("gpt-4o-2024-08-06")}}, "grader.calculate_output"),
            ({"type": "multi", "name": "m", "calculate_output": "a",
              "graders": {"a": _score("gpt-35-turbo")}}, "grader.graders.a.model"),
            ({"type": "regex", "name": "r"}, "grader.type"),
            ("string_check", "grader")):
        refused = _post(emulator, "run", {"grader": grader, "model_sample": "x"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == param, refused.text
    assert _post(emulator, "run", {"grader": _score("gpt-4o-2024-08-06")}).status_code == 400
    old = _post(emulator, "run", {"grader": _score("gpt-4o-2024-08-06"), "model_sample": "x"},
                version="2024-10-21")
    assert old.status_code == 404


def test_the_sdk_runs_a_grader_through_the_gateway(client: Any) -> None:
    result = client.fine_tuning.alpha.graders.run(
        grader=_score("gpt-4o-2024-08-06"), model_sample="fine")
    assert result.reward == 5.0 and result.metadata.sampled_model_name == "gpt-4o-2024-08-06"
