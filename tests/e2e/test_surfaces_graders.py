"""Grader runs (`fine_tuning/alpha/graders/run`, `/validate`) reach Azure on an api-version
that serves them: Azure serves them from 2025-04-01-preview (inferred: the version
reinforcement fine-tuning came with; its REST reference shows the v1 path), so in the Go
tool's env mode, whose deployments run on GA 2024-10-21, they went out there and got
Azure's bare 404. An explicit version too old for them is refused by the gateway with a
400 naming the version needed, as for any operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, Emulator
from tests.support import ServerThread

GRADER: Any = {"type": "string_check", "name": "same", "input": "{{sample.output_text}}",
               "reference": "yes", "operation": "eq"}


def _client(emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
            **env: str) -> openai.OpenAI:
    environ = {"AZURE_OPENAI_ENDPOINT": emulator.url, "AZURE_OPENAI_API_KEY": AZURE_KEY, **env}
    gateway = start_gateway(load_settings(None, environ, {"allow_open": True}))
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def test_grader_runs_go_out_on_a_version_that_serves_them_in_env_mode(
        emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> None:
    client = _client(emulator, start_gateway)
    ran = client.fine_tuning.alpha.graders.run(grader=GRADER, model_sample="yes")
    assert ran.reward == 1.0
    assert emulator.last()["query_params"]["api-version"] == ["2025-04-01-preview"]
    client.fine_tuning.alpha.graders.validate(grader=GRADER)
    assert emulator.last()["query_params"]["api-version"] == ["2025-04-01-preview"]
    assert client.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": "hi"}]).choices
    assert emulator.last()["query_params"]["api-version"] == ["2024-10-21"]  # chat: GA


def test_an_explicit_version_too_old_for_graders_is_refused_by_the_gateway(
        emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> None:
    client = _client(emulator, start_gateway, AZURE_OPENAI_API_VER="2024-10-21")
    before = len(emulator.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.run(grader=GRADER, model_sample="yes")
    assert refused.value.code == "unsupported_api_version"
    assert "2025-04-01-preview" in refused.value.message
    assert len(emulator.requests()) == before  # never sent to get Azure's 404
