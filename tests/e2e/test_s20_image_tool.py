"""The Responses API's hosted image tool through the gateway to the emulator, the
review's findings (session 20), with the official `openai` SDK and virtual keys: the
image deployment a client's `x-ms-oai-image-generation-deployment` header names is
judged by the key's allow-list, as the `model` is."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from azure_openai_proxy.governance.model import UsageRecord
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records  # noqa: F401
from tests.e2e.test_s19_image_tool import (  # noqa: F401
    GPT_4O,
    HEADER,
    IMAGE_OUT,
    TOOL,
    _client,
    _gateway,
    image_emulator,
    picturing,
)
from tests.support import ServerThread, load_keys_now
from tests.waiting import until


def _allowed_key(gateway: ServerThread, database: Path, *models: str) -> str:
    """A key whose allow-list is `models`; its secret, once the gateway has loaded it."""
    store = KeyStore.open(database)
    try:
        _, secret = store.create_key("allowed", models=models, now=time.time())
    finally:
        store.close()
    load_keys_now(gateway)  # not the next poll's (up to 0.5 s a key)
    until(lambda: httpx.get(gateway.url + "/v1/models",
                            headers={"Authorization": f"Bearer {secret}"}).status_code == 200,
          timeout=10, message="the gateway never loaded the new key")
    return secret


def test_an_image_deployment_of_a_model_the_key_may_not_use_is_refused(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(image_emulator, ledger_gateway)
    secret = _allowed_key(gateway, tmp_path / "gw.db", "gpt-4o")
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                           timeout=30)
    before = len(image_emulator.requests())
    with pytest.raises(openai.NotFoundError) as refused:  # as a `model` it may not use
        client.responses.create(model="gpt-4o", input="draw a cat", tools=TOOL,  # type: ignore[arg-type]
                                extra_headers={HEADER: "pictures"})
    assert refused.value.code == "model_not_found"
    assert refused.value.body["param"] == HEADER  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):  # nor one the gateway does not know
        client.responses.create(model="gpt-4o", input="draw a cat", tools=TOOL,  # type: ignore[arg-type]
                                extra_headers={HEADER: "elsewhere"})
    assert len(image_emulator.requests()) == before  # never reached Azure
    # the same key's text is served, the header sent or not
    client.responses.create(model="gpt-4o", input="say hi", max_output_tokens=16,
                            extra_headers={HEADER: "pictures"})
    # a key allowed gpt-image-1 makes its picture
    secret = _allowed_key(gateway, tmp_path / "gw.db", "gpt-4o", "gpt-image-1")
    answer = _client(gateway, secret).responses.create(
        model="gpt-4o", input="draw a cat", tools=TOOL)  # type: ignore[arg-type]
    assert [item.type for item in answer.output] == ["image_generation_call", "message"]


def test_a_request_without_the_image_tool_is_relayed_without_the_header(
    image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A client that sets the header on every request (Microsoft's examples make it a
    client's default header) is served without the tool, whatever it says: Azure reads
    it only to run the tool. With the tool, a value that is no deployment name is the
    gateway's 400 (session 19's test)."""
    gateway = _gateway(image_emulator, ledger_gateway)
    secret = _allowed_key(gateway, tmp_path / "gw.db")
    for value in ("../pictures?x=1", "pictures"):
        answer = _client(gateway, secret, image=value).responses.create(
            model="gpt-4o", input="say hi", max_output_tokens=16)
        assert answer.output_text
        sent = {name.lower() for name in image_emulator.last()["headers"]}
        assert HEADER not in sent
    _client(gateway, secret).responses.create(model="gpt-4o", input="draw", tools=TOOL)  # type: ignore[arg-type]
    assert HEADER in {name.lower() for name in image_emulator.last()["headers"]}


@pytest.fixture
def slow_image_emulator() -> Iterator[Emulator]:
    """With a gpt-image-1 deployment named `pictures`, and text streamed slowly after
    the picture (40 ms a token, 200 tokens)."""
    yield from picturing(token_ms=40, completion_tokens=200, burst_tokens=1)


def test_a_stream_left_after_its_picture_is_recorded_with_the_picture(
    slow_image_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """The client leaves once the picture is done (and its two partial images sent),
    while the text streams: the row's cost is the picture's and its partial images' at
    gpt-image-1's rates, estimated, beside the text's (it was the text's alone)."""
    gateway = _gateway(slow_image_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "pics")
    tool = [{**TOOL[0], "partial_images": 2}]
    with _client(gateway, secret).responses.stream(
            model="gpt-4o", input="draw a cat", tools=tool) as stream:  # type: ignore[arg-type]
        for event in stream:
            if (event.type == "response.output_item.done"
                    and event.item.type == "image_generation_call"):
                break

    def recorded() -> list[UsageRecord]:
        return [r for r in records(gateway) if r.key_id == key_id and r.route == "responses"]

    until(lambda: len(recorded()) == 1, timeout=10, message="the cut stream was not recorded")
    [record] = recorded()
    assert record.stream and record.usage_source == "estimated" and record.priced
    pictures = (272 + 2 * 100) * IMAGE_OUT / 1e6
    text = (record.prompt_tokens * GPT_4O[0] + record.completion_tokens * GPT_4O[1]) / 1e6
    assert record.cost_usd == pytest.approx(pictures + text)
    assert record.completion_tokens < 200  # left before the text's end
