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


def _reached(emulator: Emulator, path: str) -> int:
    return sum(1 for seen in emulator.requests() if seen["path"] == path)


def test_a_grader_runs_only_on_a_model_the_key_may_use(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (url, admin):
        key = admin.post("/admin/keys", json={"name": "k", "models": ["gpt-4o"]}).json()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key['key']}"},
                            timeout=30)
        multi = {"type": "multi", "calculate_output": "a",
                 "graders": {"a": _grader("gpt-4o"), "b": _grader("o3-mini")}}
        for grader in (_grader("o3-mini"), multi, {**_grader("gpt-4o"), "Model": "o3-mini"}):
            refused = http.post("/v1/fine_tuning/alpha/graders/run",
                                json={"grader": grader, "model_sample": "x"})
            assert refused.status_code in (400, 404), refused.text  # main: sent to Azure
            assert "o3-mini" in refused.json()["error"]["message"], refused.text
        assert _reached(emulator, "/openai/fine_tuning/alpha/graders/run") == 0
        allowed = http.post("/v1/fine_tuning/alpha/graders/run",
                            json={"grader": _grader("gpt-4o"), "model_sample": "x"})
        assert "o3-mini" not in allowed.text
        assert _reached(emulator, "/openai/fine_tuning/alpha/graders/run") == 1

        training = http.post("/v1/files", data={"purpose": "fine-tune"}, files={
            "file": ("t.jsonl", b'{"messages":[{"role":"user","content":"x"}]}\n')})
        assert training.status_code in (200, 201), training.text
        method = {"type": "reinforcement", "reinforcement": {"grader": _grader("o3-mini")}}
        job = http.post("/v1/fine_tuning/jobs", json={
            "model": "gpt-4o", "training_file": training.json()["id"], "method": method})
        assert job.status_code == 404 and "o3-mini" in job.json()["error"]["message"], job.text
        assert _reached(emulator, "/openai/fine_tuning/jobs") == 0
