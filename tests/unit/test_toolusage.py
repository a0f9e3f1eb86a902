"""The Responses API's hosted image tool, metered (governance/toolusage.py, the stream's
meter, the ledger's row and the budget's hold; session 19): its pictures cost the image
deployment's model's rates, apart from the text model's usage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import ModelNotPriced
from azure_openai_proxy.gateway.ledger import deployment_models, record_cost, usage_record
from azure_openai_proxy.gateway.toolhold import image_tool_usd
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable, count_tokens
from azure_openai_proxy.governance.toolusage import (
    image_gen_cost,
    image_gen_usage,
    valid_deployment_name,
)
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable

_TABLE = PriceTable.shipped()
_MODELS = {("https://e/", "pictures"): "gpt-image-1", ("https://e/", "gpt-4o"): "gpt-4o"}
_TOOL_USAGE = {"image_gen": {
    "input_tokens": 20, "input_tokens_details": {"text_tokens": 12, "image_tokens": 8},
    "output_tokens": 1056, "total_tokens": 1076}}
_TEXT = {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40,
         "input_tokens_details": {"cached_tokens": 0},
         "output_tokens_details": {"reasoning_tokens": 0}}
# gpt-image-1: text in $5, image in $10, out $40; gpt-4o: in $2.50, out $10 (per 1M)
_TOOL_USD = (12 * 5.00 + 8 * 10.00 + 1056 * 40.00) / 1e6
_TEXT_USD = (30 * 2.50 + 10 * 10.00) / 1e6


def _record(usage: dict[str, Any], route: str = "responses") -> RequestRecord:
    return RequestRecord("req-1", "POST", route=route, model="gpt-4o", deployment="gpt-4o",
                         endpoint="https://e/", status=200, total_ms=10.0, usage=usage)


def test_the_tools_usage_is_taken_as_sent_with_its_deployment() -> None:
    part = image_gen_usage({"tool_usage": _TOOL_USAGE, "output": []}, "pictures")
    assert part == {**_TOOL_USAGE["image_gen"], "deployment": "pictures"}
    assert image_gen_cost(_TABLE, _MODELS, "https://e/", part) == (pytest.approx(_TOOL_USD), True)


def test_without_tool_usage_the_pictures_are_priced_by_quality_and_size_as_an_estimate() -> None:
    output = [{"type": "image_generation_call", "id": "ig_1", "status": "completed",
               "quality": "low", "size": "1024x1536"},
              {"type": "image_generation_call", "id": "ig_2", "status": "completed",
               "quality": "auto", "size": "auto"},  # held as high, its largest
              {"type": "image_generation_call", "id": "ig_3", "status": "failed"},
              {"type": "message", "id": "msg_1"}]
    part = image_gen_usage({"output": output}, "pictures")
    assert part is not None and part["estimated"] is True
    assert part["output_tokens"] == 408 + 6240
    assert image_gen_usage({"output": [{"type": "message"}]}, "pictures") is None
    assert image_gen_usage({"tool_usage": {"image_gen": None}, "output": None}, "x") is None


def test_an_image_deployment_not_configured_is_unpriced() -> None:
    part = {**_TOOL_USAGE["image_gen"], "deployment": "elsewhere"}
    assert image_gen_cost(_TABLE, _MODELS, "https://e/", part) == (0.0, False)
    assert image_gen_cost(_TABLE, _MODELS, "https://e/", {"output_tokens": 5}) == (0.0, False)


def test_the_ledger_prices_both_parts_each_at_its_models_rates() -> None:
    usage = {**_TEXT, "image_gen": {**_TOOL_USAGE["image_gen"], "deployment": "pictures"}}
    written = usage_record(_record(usage), 1_796_212_800.0, _TABLE, _MODELS)
    assert written.cost_usd == pytest.approx(_TEXT_USD + _TOOL_USD)
    assert (written.prompt_tokens, written.completion_tokens) == (30, 10)  # the text's
    assert written.priced and written.usage_source == "measured"
    assert record_cost(_record(usage), _TABLE, _MODELS, count_tokens(usage)) == (
        pytest.approx(_TEXT_USD + _TOOL_USD), True)
    estimated = {**_TEXT, "image_gen": {"output_tokens": 272, "deployment": "pictures",
                                        "estimated": True}}
    written = usage_record(_record(estimated), 1_796_212_800.0, _TABLE, _MODELS)
    assert written.usage_source == "estimated"
    assert written.cost_usd == pytest.approx(_TEXT_USD + 272 * 40.00 / 1e6)
    # the text alone, as before
    assert usage_record(_record(_TEXT), 1_796_212_800.0, _TABLE, _MODELS).cost_usd == (
        pytest.approx(_TEXT_USD))


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000])
def test_the_meter_reads_the_final_events_tool_usage_across_chunks(piece: int) -> None:
    item = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
            "result": "QUJD" * 50, "quality": "medium", "size": "1024x1024"}
    stream = _events(
        {"type": "response.created", "response": {"id": "resp_1", "usage": None}},
        {"type": "response.output_item.added", "item": {**item, "status": "in_progress"}},
        {"type": "response.image_generation_call.partial_image", "item_id": "ig_1",
         "partial_image_b64": "QUJD" * 100, "partial_image_index": 0},
        {"type": "response.output_item.done", "item": item},
        {"type": "response.completed", "response": {
            "id": "resp_1", "usage": _TEXT, "output": [item], "tool_usage": _TOOL_USAGE}})
    meter = ResponsesStreamMeter()
    for start in range(0, len(stream), piece):
        meter.feed(stream[start:start + piece])
    assert meter.usage == _TEXT
    assert meter.image_gen == {**_TOOL_USAGE["image_gen"], "deployment": None}
    # no tool usage in the final event: its items, estimated, and its partial image
    meter = ResponsesStreamMeter()
    stream = stream.replace(b'"tool_usage"', b'"other"')
    for start in range(0, len(stream), piece):
        meter.feed(stream[start:start + piece])
    assert meter.image_gen is not None and meter.image_gen["output_tokens"] == 1056 + 100
    assert meter.image_gen["estimated"] is True


@pytest.mark.parametrize(("name", "valid"), [
    ("pictures", True), ("gpt-image-1.5_eu", True), ("a" * 64, True), ("a" * 65, False),
    ("", False), ("..", False), ("../x", False), ("a b", False), ("a?b", False),
    ("a%2e", False), ("bild\u00e9", False), ("x\r\ny", False)])
def test_only_a_deployment_name_is_relayed(name: str, valid: bool) -> None:
    assert valid_deployment_name(name) is valid


def _pool_and_guard() -> tuple[Pool, BudgetGuard]:
    """gpt-4o's pool, on an endpoint with a gpt-image-1 deployment named `pictures`."""
    settings = load_settings({"models": {
        "gpt-4o": [{"deployment_name": "gpt-4o", "endpoint": "https://e/", "api_key": "k"}],
        "gpt-image-1": [{"deployment_name": "pictures", "endpoint": "https://e/",
                         "api_key": "k", "api_version": "2025-04-01-preview"}],
    }, "client_keys": ["c"]}, {})
    guard = BudgetGuard.__new__(BudgetGuard)
    guard.prices, guard.models = _TABLE, deployment_models(settings)
    return RoutingTable(settings).resolve("gpt-4o"), guard


def test_the_hold_covers_the_pictures_the_tool_may_make() -> None:
    pool, guard = _pool_and_guard()
    header = {"x-ms-oai-image-generation-deployment": "pictures"}
    body: dict[str, Any] = {"tools": [{"type": "image_generation", "quality": "low",
                                       "size": "1024x1024"}]}
    assert image_tool_usd(guard, body, header, 10, pool, True) == pytest.approx(
        (10 * 5.00 + 272 * 40.00) / 1e6)
    streamed = {**body, "stream": True, "max_tool_calls": 2,
                "tools": [{**body["tools"][0], "partial_images": 3}]}
    assert image_tool_usd(guard, streamed, header, 10, pool, True) == pytest.approx(
        2 * (10 * 5.00 + (272 + 300) * 40.00) / 1e6)
    dearest = {"tools": [{"type": "image_generation"}]}  # auto: held as high, 1024x1536
    assert image_tool_usd(guard, dearest, header, 0, pool, True) == pytest.approx(
        6240 * 40.00 / 1e6)
    assert image_tool_usd(guard, {**body, "tool_choice": "none"}, header, 10, pool, True) == 0.0
    assert image_tool_usd(guard, {"tools": [{"type": "function"}]}, None, 10, pool, True) == 0.0
    for headers in (None, {"x-ms-oai-image-generation-deployment": "elsewhere"}):
        with pytest.raises(ModelNotPriced):
            image_tool_usd(guard, body, headers, 10, pool, True)
        assert image_tool_usd(guard, body, headers, 10, pool, False) == 0.0  # a soft budget


def test_a_stream_cut_before_its_final_event_keeps_the_pictures_it_finished() -> None:
    item = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
            "result": "QUJD" * 50, "quality": "low", "size": "1536x1024"}
    stream = _events(
        {"type": "response.created", "response": {"id": "resp_1", "usage": None}},
        {"type": "response.output_item.added", "item": {**item, "status": "in_progress"}},
        {"type": "response.output_item.done", "item": item},
        {"type": "response.output_text.delta", "delta": "Here"})
    meter = ResponsesStreamMeter()
    for start in range(0, len(stream), 5):
        meter.feed(stream[start:start + 5])
    assert meter.image_gen is None and meter.usage is None
    part = meter.pictures_so_far()
    assert part is not None and part["output_tokens"] == 400 and part["estimated"] is True
    assert ResponsesStreamMeter().pictures_so_far() is None


def test_a_record_without_text_tokens_still_prices_its_pictures() -> None:
    usage = {"image_gen": {**_TOOL_USAGE["image_gen"], "deployment": "pictures"}}
    assert record_cost(_record(usage), _TABLE, _MODELS, (0, 0, 0, 0)) == (
        pytest.approx(_TOOL_USD), True)
