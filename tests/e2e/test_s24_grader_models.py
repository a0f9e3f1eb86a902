"""Session 24's audit of native paths: a key's allow-list did not reach the model a
grader runs on. A key allowed only `gpt-4o` ran `o3-mini` as the model grader of a grader
run (`fine_tuning/alpha/graders/run`) or of a reinforcement fine-tuning job: the body's
top-level `model` was judged, the grader's never, and Azure bills a grader's tokens. Now
each `model` in a grader (a multi grader's too) is judged as a batch line's is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin


def _grader(model: str) -> dict[str, Any]:
    return {"type": "score_model", "name": "g", "model": model,
            "input": [{"role": "user", "content": "Grade {{sample.output_text}}"}]}


def _client(url: str, admin: httpx.Client) -> httpx.Client:
    """A client sending a new key allowed only `gpt-4o`."""
    key = admin.post("/admin/keys", json={"name": "k", "models": ["gpt-4o"]}).json()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key['key']}"},
                        timeout=30)


def _reached(emulator: Emulator, path: str) -> int:
    return sum(1 for seen in emulator.requests() if seen["path"] == path)


def test_a_grader_runs_only_on_a_model_the_key_may_use(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        http = _client(url, admin)
        multi = {"type": "multi", "calculate_output": "a",
                 "graders": {"a": _grader("gpt-4o-2024-08-06"), "b": _grader("o3-mini")}}
        for grader in (_grader("o3-mini"), multi,
                       {**_grader("gpt-4o-2024-08-06"), "Model": "o3-mini"}):
            refused = http.post("/v1/fine_tuning/alpha/graders/run",
                                json={"grader": grader, "model_sample": "x"})
            assert refused.status_code in (400, 404), refused.text  # main: sent to Azure
            assert "o3-mini" in refused.json()["error"]["message"], refused.text
        assert _reached(emulator, "/openai/fine_tuning/alpha/graders/run") == 0
        allowed = http.post("/v1/fine_tuning/alpha/graders/run",  # a release of gpt-4o
                            json={"grader": _grader("gpt-4o-2024-08-06"), "model_sample": "x"})
        assert allowed.status_code == 200, allowed.text
        assert _reached(emulator, "/openai/fine_tuning/alpha/graders/run") == 1

        training = http.post("/v1/files", data={"purpose": "fine-tune"}, files={
            "file": ("t.jsonl", b'{"messages":[{"role":"user","content":"x"}]}\n')})
        assert training.status_code in (200, 201), training.text
        method = {"type": "reinforcement", "reinforcement": {"grader": _grader("o3-mini")}}
        job = http.post("/v1/fine_tuning/jobs", json={
            "model": "gpt-4o", "training_file": training.json()["id"], "method": method})
        assert job.status_code == 404 and "o3-mini" in job.json()["error"]["message"], job.text
        assert _reached(emulator, "/openai/fine_tuning/jobs") == 0


def test_a_graders_model_is_judged_as_the_base_model_azure_reads(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    # Azure's grader `model` names a base model and its release (`o3-mini-2025-01-31`:
    # "model graders don't require model deployments", azure-ai-docs reinforcement-
    # fine-tuning.md), never a deployment: it is judged as a model name, its release's
    # suffix aside. Main refused it to every key with an allow-list (no deployment of
    # that name), a key allowed `o3-mini` too.
    path = "/openai/fine_tuning/alpha/graders/run"
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        keys = {name: admin.post("/admin/keys", json={"name": name, "models": models}).json()
                for name, models in (("o3", ["o3-mini"]), ("pattern", ["gpt-4o", "o3*"]),
                                     ("other", ["gpt-4o"]), ("none", []))}

        def run(key: str, model: str) -> httpx.Response:
            return httpx.post(url + "/v1/fine_tuning/alpha/graders/run", timeout=30,
                              json={"grader": _grader(model), "model_sample": "x"},
                              headers={"Authorization": f"Bearer {keys[key]['key']}"})

        for key in ("o3", "pattern", "none"):
            before = _reached(emulator, path)
            answer = run(key, "o3-mini-2025-01-31")
            assert answer.status_code == 200, (key, answer.text)  # main: 404 model_not_found
            assert _reached(emulator, path) == before + 1
        refused = run("other", "o3-mini-2025-01-31")
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "model_not_found"
        assert refused.json()["error"]["param"] == "grader"  # main: `model`, which it has not
        assert "o3-mini-2025-01-31" in refused.json()["error"]["message"]
        assert run("o3", "o3-mini-high").status_code == 404  # another model, not a release


def test_only_the_graders_are_walked_in_any_letters(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    # A grader named `Grader` (read as `grader` by a case-insensitive binder, as `Model`
    # is) went to Azure unjudged; a job's `method` was walked whole, so a `model` in its
    # response format's JSON schema (a car's) was judged as a grader's and refused.
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        http = _client(url, admin)
        cased = http.post("/v1/fine_tuning/alpha/graders/run",
                          json={"Grader": _grader("o3-mini-2025-01-31"), "model_sample": "x"})
        assert cased.status_code == 404, cased.text  # main: sent to Azure
        assert "o3-mini-2025-01-31" in cased.json()["error"]["message"]
        assert _reached(emulator, "/openai/fine_tuning/alpha/graders/run") == 0

        training = http.post("/v1/files", data={"purpose": "fine-tune"}, files={
            "file": ("t.jsonl", b'{"messages":[{"role":"user","content":"x"}]}\n')})
        schema = {"type": "object", "properties": {"make": {"type": "string"},
                                                   "model": {"type": "string"}},
                  "examples": [{"make": "Honda", "model": "Civic"}]}
        method = {"type": "reinforcement", "reinforcement": {
            "grader": _grader("gpt-4o-2024-08-06"),
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "car", "schema": schema}}}}
        job = http.post("/v1/fine_tuning/jobs", json={
            "model": "gpt-4o", "training_file": training.json()["id"], "method": method})
        assert "Civic" not in job.text, job.text  # main: 404 model_not_found `Civic`
        assert _reached(emulator, "/openai/fine_tuning/jobs") == 1
