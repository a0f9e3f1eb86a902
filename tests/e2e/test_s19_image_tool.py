"""The Responses API's hosted image tool through the gateway to the emulator (issue 13,
"every record's cost computed"; session 19). Azure runs the tool on the image deployment
named by the `x-ms-oai-image-generation-deployment` header and bills its pictures at that
model's rates, apart from the text model's usage; the gateway recorded the text usage
alone, so a key made pictures through Responses at $0 and a hard budget never stopped
it. Driven by the official `openai` SDK with a virtual key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import AZURE_KEY, Emulator, emulator_config
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.e2e.test_s18_media_holds import gateway_settings_deployments
from tests.support import ServerThread, serve

HEADER = "x-ms-oai-image-generation-deployment"
# gpt-4o's and gpt-image-1's rates (prices.yaml), USD per 1M tokens
GPT_4O = (2.50, 10.00)
IMAGE_TEXT_IN, IMAGE_OUT = 5.00, 40.00


def picturing(**overrides: Any) -> Iterator[Emulator]:
    """An emulator with a gpt-image-1 deployment named `pictures` (`overrides`: its
    configuration's)."""
    from azure_openai_proxy.emulator import create_emulator_app
    from azure_openai_proxy.emulator.config import EmulatedDeployment

    image = EmulatedDeployment("pictures", "gpt-image-1-2025-04-15", "images")
    config = emulator_config()
    config = emulator_config(deployments=(*config.deployments, image), **overrides)
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


@pytest.fixture
def image_emulator() -> Iterator[Emulator]:
    """With a gpt-image-1 deployment named `pictures`."""
    yield from picturing()


def _gateway(emulator: Emulator, start: Callable[..., ServerThread]) -> ServerThread:
    deployments = [*gateway_settings_deployments(emulator.url),
                   {"model_name": "gpt-image-1", "deployment_name": "pictures",
                    "endpoint": emulator.url, "api_key": AZURE_KEY,
                    "api_version": "2025-04-01-preview"}]
    return start(emulator, deployment_config=deployments)


def _client(gateway: ServerThread, secret: str, image: str = "pictures") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                         timeout=30, default_headers={HEADER: image})


def _expected(usage: Any, tool: Any) -> float:
    text = (usage.input_tokens * GPT_4O[0] + usage.output_tokens * GPT_4O[1]) / 1e6
    picture = (tool.input_tokens * IMAGE_TEXT_IN + tool.output_tokens * IMAGE_OUT) / 1e6
    return text + picture


TOOL = [{"type": "image_generation", "quality": "low", "size": "1024x1024"}]


def test_a_responses_picture_is_recorded_at_the_image_models_rates(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(image_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics")
    answer = _client(gateway, secret).responses.create(
        model="gpt-4o", input="draw a cat", tools=TOOL)  # type: ignore[arg-type]
    [call] = [item for item in answer.output if item.type == "image_generation_call"]
    assert call.result  # the SDK parsed the picture
    assert answer.usage is not None and answer.tool_usage is not None
    tool = answer.tool_usage.image_gen
    assert tool is not None and tool.output_tokens == 272  # low, 1024x1024
    [record] = [r for r in records(gateway) if r.key_id == key_id and r.route == "responses"]
    assert record.cost_usd == pytest.approx(_expected(answer.usage, tool))
    assert record.cost_usd > 272 * IMAGE_OUT / 1e6


def test_a_streamed_responses_picture_is_recorded_at_the_image_models_rates(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(image_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics")
    tool_config = [{**TOOL[0], "partial_images": 2}]
    kinds: list[str] = []
    final = None
    with _client(gateway, secret).responses.stream(
            model="gpt-4o", input="draw a cat", tools=tool_config) as stream:  # type: ignore[arg-type]
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds.count("response.image_generation_call.partial_image") == 2
    assert final.usage is not None and final.tool_usage is not None
    tool = final.tool_usage.image_gen
    assert tool is not None and tool.output_tokens == 272 + 2 * 100
    [record] = [r for r in records(gateway) if r.key_id == key_id and r.route == "responses"]
    assert record.stream
    assert record.cost_usd == pytest.approx(_expected(final.usage, tool))


def test_an_image_deployment_that_is_no_deployment_name_is_refused_before_azure(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(image_emulator, ledger_gateway)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics")
    before = len(image_emulator.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        _client(gateway, secret, image="../pictures?x=1").responses.create(
            model="gpt-4o", input="draw a cat", tools=TOOL)  # type: ignore[arg-type]
    assert refused.value.body["param"] == HEADER  # type: ignore[index]
    assert len(image_emulator.requests()) == before


def test_a_hard_budget_stops_a_key_once_its_responses_pictures_reach_it(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A low 1024x1024 picture costs ~$0.011 at gpt-image-1's rates, the text a few
    hundredths of a cent: a $0.01 budget is spent by the first. Recorded at the text's
    cost alone, the key went on making pictures."""
    gateway = _gateway(image_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics", budget_usd=0.01,
                                  budget_period="daily")
    client = _client(gateway, secret)
    client.responses.create(model="gpt-4o", input="draw a cat", tools=TOOL,  # type: ignore[arg-type]
                            max_output_tokens=16)
    before = len(image_emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model="gpt-4o", input="draw a dog", tools=TOOL,  # type: ignore[arg-type]
                                max_output_tokens=16)
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(image_emulator.requests()) == before
    spent = sum(r.cost_usd for r in records(gateway) if r.key_id == key_id)
    assert spent >= 0.01


def test_a_hard_budget_refuses_a_picture_on_a_deployment_it_cannot_price(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """An image deployment the gateway does not configure: its model, and so its
    pictures' price, unknown (recorded at $0, the budget would never stop them)."""
    gateway = _gateway(image_emulator, ledger_gateway)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics", budget_usd=5.0,
                             budget_period="daily")
    before = len(image_emulator.requests())
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _client(gateway, secret, image="elsewhere").responses.create(
            model="gpt-4o", input="draw a cat", tools=TOOL)  # type: ignore[arg-type]
    assert refused.value.code == "model_not_priced"
    assert len(image_emulator.requests()) == before
    # the same without the tool is served
    _client(gateway, secret, image="elsewhere").responses.create(
        model="gpt-4o", input="say hi", max_output_tokens=16)


def test_the_emulator_refuses_the_tool_as_azure_does_without_an_image_deployment(
    image_emulator: Emulator,
) -> None:
    import httpx

    url = image_emulator.url + "/openai/responses?api-version=2025-04-01-preview"
    body = {"model": "gpt-4o", "input": "draw", "tools": TOOL}
    for headers in ({}, {HEADER: "gpt-4o"}, {HEADER: "missing"}):
        answer = httpx.post(url, json=body, headers={"api-key": AZURE_KEY, **headers})
        assert answer.status_code == 400
        assert answer.json()["error"]["type"] == "image_generation_user_error"
    answer = httpx.post(url, json=body, headers={"api-key": AZURE_KEY, HEADER: "pictures"})
    assert answer.status_code == 200
    assert [item["type"] for item in answer.json()["output"]] == [
        "image_generation_call", "message"]
