"""api-versions that choose themselves (issue 14): the Go tool's env mode with only
AZURE_OPENAI_ENDPOINT serves a reasoning model on a version Azure enables it on, an
explicit version is kept (and refused as before), and check-config says which version
each deployment sends and why."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.apiversions import NEWEST_PREVIEW
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, MASKED_AZURE_KEY, Emulator, emulator_config
from tests.e2e.test_cli import run_cli, wait_for_output
from tests.processes import cli, running
from tests.support import ServerThread, serve

THINK = [{"role": "user", "content": "think"}]


def _client(gateway: ServerThread) -> Any:
    from openai import OpenAI

    # Passthrough: the client's key is the Azure key, as in the Go tool's env mode.
    return OpenAI(base_url=gateway.url + "/v1", api_key=AZURE_KEY, max_retries=0, timeout=30)


def test_env_mode_with_only_the_endpoint_serves_o3_mini_on_a_chosen_version(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url})
    client = _client(start_gateway(settings))
    raw = client.chat.completions.with_raw_response.create(
        model="o3-mini", messages=THINK, max_tokens=30, temperature=0.2
    )
    assert raw.parse().choices[0].message.content
    adapted = raw.headers["x-proxy-adapted"]
    assert "max_tokens->max_completion_tokens" in adapted and "dropped:temperature" in adapted
    sent = emulator.last()
    assert sent["path"] == "/openai/deployments/o3-mini/chat/completions"
    assert sent["query_params"]["api-version"] == ["2025-04-01-preview"]
    assert sent["status"] == 200
    assert sent["json"]["max_completion_tokens"] == 30
    assert "max_tokens" not in sent["json"] and "temperature" not in sent["json"]
    assert sent["headers"]["api-key"] == MASKED_AZURE_KEY
    # A standard model on the same endpoint keeps the default.
    client.chat.completions.create(model="gpt-4o", messages=THINK, max_tokens=5)
    assert emulator.last()["query_params"]["api-version"] == ["2024-10-21"]


def test_env_mode_serves_a_reasoning_name_the_version_table_does_not_list(
    start_gateway: Callable[[Settings], ServerThread]
) -> None:
    # `my-o4` is a reasoning model by its name; it used to keep the default 2024-10-21
    # and be refused by the gateway itself. The general reasoning rule now chooses.
    config = emulator_config()
    my_o4 = EmulatedDeployment("my-o4", "o4-mini-2025-04-16", "chat")
    with serve(lambda: create_emulator_app(
            dataclasses.replace(config, deployments=(*config.deployments, my_o4)))) as server:
        emulator = Emulator(server)
        settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url})
        _served_on_the_chosen_version(_client(start_gateway(settings)), emulator)


def _served_on_the_chosen_version(client: Any, emulator: Emulator) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="my-o4", messages=THINK, max_tokens=30, temperature=0.2
    )
    assert raw.parse().choices[0].message.content
    sent = emulator.last()
    assert sent["path"] == "/openai/deployments/my-o4/chat/completions"
    assert sent["query_params"]["api-version"] == ["2025-04-01-preview"]
    assert sent["json"]["max_completion_tokens"] == 30 and "temperature" not in sent["json"]


def test_the_emulator_refuses_o3_mini_on_the_default_version(emulator: Emulator) -> None:
    # What the choice spares env-mode users: Azure's own refusal, faithfully emulated.
    from openai import AzureOpenAI

    azure = AzureOpenAI(azure_endpoint=emulator.url, api_key=AZURE_KEY,
                        api_version="2024-10-21", max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as refused:
        azure.chat.completions.create(model="o3-mini", messages=THINK,
                                      max_completion_tokens=30)
    assert refused.value.body == {
        "code": "BadRequest",
        "message": "Model {modelName} is enabled only for api versions 2024-12-01-preview and later",
    }


def test_an_explicit_api_version_is_kept_and_refused_with_the_version_needed(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url,
                                    "AZURE_OPENAI_API_VER": "2024-10-21"})
    client = _client(start_gateway(settings))
    before = len(emulator.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="o3-mini", messages=THINK, max_tokens=30)
    message = refused.value.message
    assert "2024-12-01-preview or later" in message and "api-version 2024-10-21" in message
    assert len(emulator.requests()) == before  # refused by the gateway, never sent


def test_env_mode_sends_the_responses_api_on_a_version_that_serves_it(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    # gpt-4o's own version (the default GA, 2024-10-21) has no Responses API: Azure
    # answers 400 naming 2025-03-01-preview. The operation's need chooses the version,
    # per request.
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url})
    client = _client(start_gateway(settings))
    created = client.responses.create(model="gpt-4o", input="Tell me something")
    assert created.output_text
    sent = emulator.last()
    assert sent["path"] == "/openai/responses" and sent["status"] == 200
    assert sent["query_params"]["api-version"] == [NEWEST_PREVIEW]
    assert client.responses.retrieve(created.id).id == created.id  # no model: home pool
    assert emulator.last()["query_params"]["api-version"] == [NEWEST_PREVIEW]
    client.responses.delete(created.id)
    assert emulator.last()["status"] == 200
    # Chat on the same deployment keeps the model's version.
    client.chat.completions.create(model="gpt-4o", messages=THINK, max_tokens=5)
    assert emulator.last()["query_params"]["api-version"] == ["2024-10-21"]


def test_env_mode_sends_vector_stores_on_a_version_that_serves_them(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    # The emulator does not serve vector stores (it answers Azure's 404 for any unknown
    # path); what is tested is the version the gateway sends, from its request log.
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url})
    client = _client(start_gateway(settings))
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.create(name="notes")
    sent = emulator.last()
    assert (sent["method"], sent["path"]) == ("POST", "/openai/vector_stores")
    assert sent["query_params"]["api-version"] == [NEWEST_PREVIEW]


def test_an_explicit_version_too_old_for_the_responses_api_is_a_clear_400(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]
) -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": emulator.url,
                                    "AZURE_OPENAI_API_VER": "2024-10-21"})
    client = _client(start_gateway(settings))
    before = len(emulator.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o", input="Tell me something")
    assert refused.value.code == "unsupported_api_version"
    message = refused.value.message
    assert "The Responses API needs api-version 2025-03-01-preview or later" in message
    assert "api-version 2024-10-21" in message and AZURE_KEY not in message
    assert len(emulator.requests()) == before  # refused by the gateway, never sent


CONFIG = """\
client_keys: [client-secret-1]
models:
  o3-mini:
    - {deployment_name: o3-mini, endpoint: "https://east.example/", api_key: "azure-secret-east"}
  o4-mini:
    - {deployment_name: o4-mini, endpoint: "https://east.example/", api_key: "azure-secret-east",
       api_version: 2024-12-01-preview}
  gpt-4o:
    - {deployment_name: east-4o, endpoint: "https://east.example/", api_key: "azure-secret-east"}
    - {deployment_name: west-4o, endpoint: "https://west.example/", api_key: "azure-secret-west",
       api: v1}
  gpt-35-turbo:
    - {deployment_name: old-35, endpoint: "https://east.example/", api_key: "azure-secret-east",
       api_version: 2023-12-01-preview}
"""


def test_check_config_prints_each_deployments_api_version_and_why(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    result = run_cli("check-config", "-c", str(config), env={})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    expected = """\
api-versions:
  o3-mini -> o3-mini: 2025-04-01-preview (chosen for o3-mini: reasoning models need >= 2024-12-01-preview)
  o4-mini -> o4-mini: 2024-12-01-preview (explicit)
  gpt-4o -> east-4o: 2024-10-21 (default)
  gpt-4o -> west-4o: v1 API, api-version none
  gpt-35-turbo -> old-35: 2023-12-01-preview (explicit)
WARNING: o4-mini -> o4-mini: api-version 2024-12-01-preview cannot serve o4-mini (reasoning models need >= 2025-04-01-preview): its requests will be refused; remove the explicit api-version to let the gateway choose, or set 2025-04-01-preview
WARNING: gpt-35-turbo -> old-35: api-version 2023-12-01-preview was retired by Azure on 2024-07-01: move to 2025-04-01-preview
"""
    assert expected in out
    for secret in ("azure-secret-east", "azure-secret-west", "client-secret-1"):
        assert secret not in out + result.stderr


FOUNDRY_CONFIG = """\
client_keys: [client-secret-1]
models:
  o3-mini:
    - {deployment_name: o3-mini, endpoint: "https://f.services.ai.azure.com/", api: foundry,
       api_key: "foundry-secret", api_version: 2024-05-01-preview}
  llama:
    - {deployment_name: llama-3, endpoint: "https://f.services.ai.azure.com/", api: foundry,
       api_key: "foundry-secret", api_version: 2024-05-01-preview}
"""


def test_check_config_warns_about_a_foundry_version_that_cannot_serve_its_model(
    tmp_path: Path
) -> None:
    # Review: only `api: dated` deployments were checked, yet compat refuses o3-mini on
    # Foundry's 2024-05-01-preview. Foundry's own version is no retired Azure OpenAI one.
    config = tmp_path / "c.yaml"
    config.write_text(FOUNDRY_CONFIG)
    result = run_cli("check-config", "-c", str(config), env={})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING:")]
    assert warnings == [
        "WARNING: o3-mini -> o3-mini: api-version 2024-05-01-preview cannot serve o3-mini "
        "(reasoning models need >= 2024-12-01-preview): its requests will be refused; remove "
        "the explicit api-version to let the gateway choose, or set 2025-04-01-preview"
    ]
    assert "foundry-secret" not in result.stdout + result.stderr


def test_check_config_in_env_mode_says_how_versions_are_chosen() -> None:
    result = run_cli("check-config", env={"AZURE_OPENAI_ENDPOINT": "https://r.example/",
                                          "AZURE_OPENAI_API_KEY": "azure-secret"})
    assert result.returncode == 0, result.stderr
    assert (
        "default endpoint: https://r.example (api-version 2024-10-21 by default; "
        "2025-04-01-preview for models that need a newer one (reasoning, realtime, audio, "
        "speech), key configured)"
    ) in result.stdout
    result = run_cli("check-config", env={"AZURE_OPENAI_ENDPOINT": "https://r.example/",
                                          "AZURE_OPENAI_API_VER": "2023-08-01-preview"})
    assert "(api-version 2023-08-01-preview, explicit, key passthrough" in result.stdout
    assert ("WARNING: the default api-version: api-version 2023-08-01-preview was retired by "
            "Azure on 2024-07-01: move to 2025-04-01-preview") in result.stdout
    assert "azure-secret" not in result.stdout + result.stderr


def test_serve_warns_about_a_retired_api_version_at_start(
    emulator: Emulator, reserve_port: Callable[[], int]
) -> None:
    port = reserve_port()
    env = {"AZURE_OPENAI_ENDPOINT": emulator.url, "AZURE_OPENAI_API_VER": "2023-12-01-preview"}
    with running(cli("-l", f"127.0.0.1:{port}"), port=port, env=env) as gateway:
        output = wait_for_output(gateway, "retired by Azure")
    assert ("config: the default api-version: api-version 2023-12-01-preview was retired by "
            "Azure on 2024-07-01: move to 2025-04-01-preview") in output


OPERATIONS_CONFIG = """\
client_keys: [client-secret-1]
models:
  gpt-4o:
    - {deployment_name: ga-4o, endpoint: "https://east.example/", api_key: "azure-secret-east",
       api_version: 2024-10-21}
    - {deployment_name: chosen-4o, endpoint: "https://east.example/", api_key: "azure-secret-east"}
  gpt-image-1:
    - {deployment_name: image-1, endpoint: "https://east.example/", api_key: "azure-secret-east",
       api_version: 2025-03-01-preview}
  tts:
    - {deployment_name: tts-1, endpoint: "https://east.example/", api_key: "azure-secret-east",
       api_version: 2024-06-01}
  gpt-35-turbo:
    - {deployment_name: ga-35, endpoint: "https://east.example/", api_key: "azure-secret-east",
       api_version: 2024-10-21}
"""


def test_check_config_warns_about_an_explicit_version_too_old_for_what_its_model_offers(
    tmp_path: Path
) -> None:
    """An explicit version that cannot serve the Responses API on gpt-4o, or image edits
    on gpt-image-1: the gateway refuses those requests with a 400, so say it before (a tts
    model on a GA version already gets the model's own warning, once)."""
    config = tmp_path / "c.yaml"
    config.write_text(OPERATIONS_CONFIG)
    result = run_cli("check-config", "-c", str(config), env={})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING:")]
    assert warnings == [
        "WARNING: tts -> tts-1: api-version 2024-06-01 cannot serve tts (speech models need >= "
        "2024-02-15-preview (previews only)): its requests will be refused; remove the "
        "explicit api-version to let the gateway choose, or set 2025-04-01-preview",
        "WARNING: gpt-4o -> ga-4o: api-version 2024-10-21 cannot serve the Responses API "
        "(2025-03-01-preview or later (preview versions only)), which its model offers: "
        "those requests are refused with a 400; remove the explicit api-version to let the "
        "gateway choose per request, or set 2025-04-01-preview",
        "WARNING: gpt-image-1 -> image-1: api-version 2025-03-01-preview cannot serve image "
        "edits (2025-04-01-preview or later (preview versions only)), which its model offers: "
        "those requests are refused with a 400; remove the explicit api-version to let the "
        "gateway choose per request, or set 2025-04-01-preview",
    ]
    assert "azure-secret-east" not in result.stdout + result.stderr


def test_check_config_in_env_mode_warns_what_an_explicit_default_cannot_serve() -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://r.example/", "AZURE_OPENAI_API_VER": "2024-06-01"}
    result = run_cli("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert ("WARNING: the default api-version 2024-06-01 cannot serve the Responses API, "
            "vector stores, the Assistants API, the Assistants API's threads, the Batch API, "
            "speech (text to speech), image edits, grader runs, grader validation: requests "
            "for them to the default endpoint "
            "are refused with a 400; unset it (AZURE_OPENAI_API_VER, `api_version`) to let "
            "the gateway choose per request, or set 2025-04-01-preview") in result.stdout
    env["AZURE_OPENAI_API_VER"] = "2025-04-01-preview"
    result = run_cli("check-config", env=env)
    assert "cannot serve" not in result.stdout
