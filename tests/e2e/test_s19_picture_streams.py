"""Streamed pictures, metered (issue 13: every record's cost computed; budgets; session
19): the official `openai` SDK asks gpt-image-1 for a picture with `stream=True`
through the gateway to the emulator, with a virtual key. Its usage, in the completed
event(s), was relayed unread (recorded at $0), and a key with a hard budget was refused
the stream (403); now the record is Azure's usage priced, an abandoned stream is an
estimate (flagged, never $0), and a hard budget holds it and stops the key once its
records reach the budget."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from azure_openai_proxy.emulator import media
from azure_openai_proxy.governance.model import UsageRecord
from tests.e2e.conftest import AZURE_KEY, MODELS, Emulator, emulator_config
from tests.e2e.test_ledger import _virtual_key, ledger_gateway, records, sdk  # noqa: F401
from tests.support import ServerThread, serve
from tests.waiting import until

# gpt-image-1's prices (prices.yaml), USD per 1M tokens: text in, image in, out.
_TEXT, _IMAGE, _OUT = 5.00, 10.00, 40.00


def _picturing(token_ms: float) -> Iterator[Emulator]:
    from azure_openai_proxy.emulator import create_emulator_app
    from azure_openai_proxy.emulator.config import EmulatedDeployment

    image = EmulatedDeployment("gpt-image-1", "gpt-image-1-2025-04-15", "images",
                               token_ms=token_ms)
    config = emulator_config()
    config = emulator_config(deployments=(*config.deployments, image))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


@pytest.fixture
def picturing_emulator() -> Iterator[Emulator]:
    """With a gpt-image-1 deployment that answers at once."""
    yield from _picturing(0)


@pytest.fixture
def slow_picturing_emulator() -> Iterator[Emulator]:
    """Its gpt-image-1 takes 1 s an event (10 ms a token, 100 tokens an event): a client
    can leave after the first partial picture."""
    yield from _picturing(10)


def _gateway(emulator: Emulator, start: Callable[..., ServerThread]) -> ServerThread:
    deployments: list[dict[str, Any]] = [
        {"model_name": model, "deployment_name": deployment, "endpoint": emulator.url,
         "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
        for model, deployment in {**MODELS, "gpt-image-1": "gpt-image-1"}.items()]
    return start(emulator, deployment_config=deployments)


def _cost(usage: Any) -> float:
    details = usage.input_tokens_details
    return (details.text_tokens * _TEXT + details.image_tokens * _IMAGE
            + usage.output_tokens * _OUT) / 1e6


def _picture_records(gateway: ServerThread, key_id: str) -> list[UsageRecord]:
    return [r for r in records(gateway)
            if r.key_id == key_id and r.route.startswith("images/")]


def test_a_streamed_picture_is_recorded_at_azures_usage(
    picturing_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "s")
    events = list(sdk(gateway, secret).images.generate(
        model="gpt-image-1", prompt="a red fox in the snow", stream=True, partial_images=2,
        n=2, quality="low", size="1024x1024"))
    assert [e.type for e in events] == (["image_generation.partial_image"] * 2
                                        + ["image_generation.completed"]) * 2
    usages = [e.usage for e in events if e.type == "image_generation.completed"]
    [record] = _picture_records(gateway, key_id)
    assert record.stream and record.status == 200 and record.usage_source == "measured"
    assert record.prompt_tokens == sum(u.input_tokens for u in usages) > 0
    assert record.completion_tokens == sum(u.output_tokens for u in usages) == 2 * (272 + 200)
    assert record.cost_usd == pytest.approx(sum(_cost(u) for u in usages))


def test_a_streamed_edit_is_recorded_at_azures_usage(
    picturing_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    gateway = _gateway(picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "e")
    events = list(sdk(gateway, secret).images.edit(
        model="gpt-image-1", image=("cat.png", media.png(1024, 1024, (9, 9, 9)), "image/png"),
        prompt="add a hat", stream=True, partial_images=1, quality="medium"))
    [usage] = [e.usage for e in events if e.type == "image_edit.completed"]
    assert usage.input_tokens_details.image_tokens == 194  # the input picture's
    [record] = _picture_records(gateway, key_id)
    assert record.usage_source == "measured" and record.completion_tokens == 1056 + 100
    assert record.cost_usd == pytest.approx(_cost(usage))


def test_a_streamed_picture_left_after_its_first_partial_is_estimated(
    slow_picturing_emulator: Emulator,
    ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    gateway = _gateway(slow_picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "a")
    stream = sdk(gateway, secret).images.generate(
        model="gpt-image-1", prompt="a red fox in the snow", stream=True, partial_images=3,
        quality="low", size="1024x1024")
    first = next(iter(stream))
    assert first.type == "image_generation.partial_image"
    stream.close()
    until(lambda: _picture_records(gateway, key_id), 10, "the left stream was not recorded")
    [record] = _picture_records(gateway, key_id)
    assert record.stream and record.usage_source == "estimated"
    # the pictures asked for, as the hold counts them: 272 and 3 partial pictures' 100
    assert record.completion_tokens == 272 + 300
    assert record.prompt_tokens > 0
    assert record.cost_usd == pytest.approx(
        (record.prompt_tokens * _TEXT + record.completion_tokens * _OUT) / 1e6)


def test_a_hard_budget_is_served_streamed_pictures_until_its_records_reach_it(
    picturing_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A low 1024x1024 picture with one partial picture costs about $0.015: a $0.04
    budget serves two or so, then refuses with 429 insufficient_quota (it was 403
    `model_not_priced` from the first)."""
    gateway = _gateway(picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "h", budget_usd=0.04,
                                  budget_period="daily")
    client = sdk(gateway, secret)
    served = 0
    refused: openai.RateLimitError | None = None
    for _ in range(10):
        try:
            events = list(client.images.generate(
                model="gpt-image-1", prompt="a red fox", stream=True, partial_images=1,
                quality="low", size="1024x1024"))
        except openai.RateLimitError as exc:
            refused = exc
            break
        assert events[-1].type == "image_generation.completed"
        served += 1
    assert served >= 2 and refused is not None
    assert refused.code == "insufficient_quota"
    assert refused.response.headers["x-should-retry"] == "false"
    kept = [r for r in _picture_records(gateway, key_id) if r.status == 200]
    assert len(kept) == served and all(r.usage_source == "measured" for r in kept)
    spent = sum(r.cost_usd for r in kept)
    assert spent > 0.04 - 0.016  # stopped once the records (nearly) reach it


def test_a_streamed_edit_left_after_its_first_partial_is_estimated_from_its_form(
    slow_picturing_emulator: Emulator,
    ledger_gateway: Callable[..., ServerThread], tmp_path: Path,  # noqa: F811
) -> None:
    """An edit is a form: its `n`, `quality`, `size` and `partial_images` are read from
    it when its stream begins (the JSON body a generation has is None here)."""
    gateway = _gateway(slow_picturing_emulator, ledger_gateway)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "f")
    stream = sdk(gateway, secret).images.edit(
        model="gpt-image-1", image=("cat.png", media.png(64, 64, (9, 9, 9)), "image/png"),
        prompt="add a hat", stream=True, partial_images=2, n=2, quality="low",
        size="1024x1536")
    assert next(iter(stream)).type == "image_edit.partial_image"
    stream.close()
    until(lambda: _picture_records(gateway, key_id), 10, "the left stream was not recorded")
    [record] = _picture_records(gateway, key_id)
    assert record.usage_source == "estimated"
    assert record.completion_tokens == 2 * (408 + 200)  # not the dearest picture's 6,240
    assert record.cost_usd > 0


@pytest.mark.parametrize(("deployment", "version", "body", "param"), [
    ("dall-e-3", "2025-04-01-preview", {}, "stream"),
    ("gpt-image-1", "2025-04-01-preview", {"partial_images": 4}, "partial_images"),
    ("gpt-image-1", "2025-04-01-preview", {"partial_images": -1}, "partial_images"),
    ("gpt-image-1", "2024-10-21", {}, "stream"),
])
def test_the_emulator_refuses_a_stream_azure_refuses(
    picturing_emulator: Emulator, deployment: str, version: str, body: dict[str, Any],
    param: str,
) -> None:
    import httpx

    answer = httpx.post(
        f"{picturing_emulator.url}/openai/deployments/{deployment}/images/generations",
        params={"api-version": version}, headers={"api-key": AZURE_KEY}, timeout=10,
        json={"prompt": "a fox", "stream": True, **body})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param
