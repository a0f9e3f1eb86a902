"""The Responses API's hosted image tool, the review's findings (session 20): the key's
allow-list applied to the image deployment (gateway/governed.py), a cut stream's
pictures and partial images priced (normalize/responses_meter.py, the ledger's row),
the hold on a pool of several endpoints and of up to ten calls (gateway/toolhold.py),
a request never answered estimated with its pictures (gateway/budgethold.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import ModelNotAllowed, ModelNotPriced
from azure_openai_proxy.gateway.answerusage import with_image_gen
from azure_openai_proxy.gateway.governed import check_image_allowed
from azure_openai_proxy.gateway.ledger import deployment_models, usage_record
from azure_openai_proxy.gateway.toolhold import image_tool_usd
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.estimate import estimated_usage
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.governance.toolusage import IMAGE_GEN
from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable

HEADER = "x-ms-oai-image-generation-deployment"
_TABLE = PriceTable.shipped()
TOOL_BODY: dict[str, Any] = {"model": "gpt-4o", "input": "draw",
                             "tools": [{"type": "image_generation", "quality": "low"}]}


def _table() -> RoutingTable:
    """gpt-4o on two endpoints; `pictures` (gpt-image-1) on the first, `dalle` (dall-e-3)
    on both, `odd` of another model on the second."""
    def on(endpoint: str, name: str) -> dict[str, Any]:
        return {"deployment_name": name, "endpoint": endpoint, "api_key": "k",
                "api_version": "2025-04-01-preview"}
    first, second = "https://a.openai.azure.com", "https://b.openai.azure.com"
    return RoutingTable(load_settings({"models": {
        "gpt-4o": [on(first, "gpt-4o"), on(second, "gpt-4o")],
        "gpt-4o-solo": [on(first, "solo")],
        "gpt-image-1": [on(first, "pictures"), on(second, "odd")],
        "dall-e-3": [on(first, "dalle"), on(second, "dalle")],
    }, "client_keys": ["c"]}, {}))


def test_the_image_deployment_is_judged_by_the_keys_allow_list() -> None:
    table = _table()
    solo, pool = table.resolve("gpt-4o-solo"), table.resolve("gpt-4o")
    header = {HEADER: "pictures"}
    check_image_allowed(("gpt-4o*", "gpt-image-1"), table, solo, TOOL_BODY, header)
    with pytest.raises(ModelNotAllowed) as refused:
        check_image_allowed(("gpt-4o*",), table, solo, TOOL_BODY, header)
    assert refused.value.status == 404 and refused.value.code == "model_not_found"
    assert refused.value.param == HEADER
    # by the model, never by the deployment's name
    with pytest.raises(ModelNotAllowed):
        check_image_allowed(("gpt-4o*", "pictures"), table, solo, TOOL_BODY, header)
    # on a pool of two endpoints: the deployment's model on each of them
    check_image_allowed(("gpt-4o", "dall-e-3"), table, pool, TOOL_BODY, {HEADER: "dalle"})
    with pytest.raises(ModelNotAllowed):  # not on the second endpoint: its model unknown
        check_image_allowed(("gpt-4o", "gpt-image-1"), table, pool, TOOL_BODY, header)
    with pytest.raises(ModelNotAllowed):  # configured nowhere
        check_image_allowed(("*",), table, solo, TOOL_BODY, {HEADER: "elsewhere"})
    # no image tool asked: the header is not relayed (translation.py), nothing to judge
    check_image_allowed(("gpt-4o",), table, solo, {"input": "hi"}, header)
    check_image_allowed(("gpt-4o",), table, solo, {**TOOL_BODY, "tool_choice": "none"}, header)
    check_image_allowed(("gpt-4o",), table, solo, TOOL_BODY, {})


# -- a stream cut after its picture: the ledger's row prices it ------------------------

_MODELS = {("https://e/", "pictures"): "gpt-image-1", ("https://e/", "gpt-4o"): "gpt-4o",
           ("https://f/", "gpt-4o"): "gpt-4o", ("https://f/", "odd"): "gpt-image-1",
           ("https://g/", "odd"): "dall-e-3"}


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


def _cut_stream(partials: int, done: bool) -> bytes:
    item = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
            "result": "QUJD" * 50, "quality": "low", "size": "1024x1024"}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": "resp_1", "usage": None}},
        {"type": "response.output_item.added", "item": {**item, "status": "in_progress"}},
        {"type": "response.image_generation_call.in_progress", "item_id": "ig_1"}]
    events += [{"type": "response.image_generation_call.partial_image", "item_id": "ig_1",
                "partial_image_b64": "QUJD" * 100, "partial_image_index": n}
               for n in range(partials)]
    if done:
        events += [{"type": "response.output_item.done", "item": item}]
    # a text that quotes the partial image's event name counts no partial image
    events += [{"type": "response.output_text.delta",
                "delta": 'see "response.image_generation_call.partial_image"'},
               {"type": "response.output_text.done",
                "text": 'see "response.image_generation_call.partial_image"'}]
    return _events(*events)


@pytest.mark.parametrize(("partials", "done", "tokens"), [
    (0, True, 272), (2, True, 272 + 200), (3, False, 300), (0, False, None)])
def test_a_cut_streams_pictures_and_partial_images_are_counted(
        partials: int, done: bool, tokens: int | None) -> None:
    stream = _cut_stream(partials, done)
    meter = ResponsesStreamMeter()
    for start in range(0, len(stream), 7):
        meter.feed(stream[start:start + 7])
    part = meter.pictures_so_far()
    if tokens is None:
        assert part is None
    else:
        assert part is not None and part["output_tokens"] == tokens and part["estimated"]


def test_a_final_event_without_tool_usage_counts_the_partial_images_too() -> None:
    item = {"type": "image_generation_call", "id": "ig_1", "status": "completed",
            "quality": "low", "size": "1024x1024"}
    stream = _cut_stream(2, True) + _events(
        {"type": "response.completed", "response": {"id": "resp_1", "output": [item],
                                                    "usage": {"input_tokens": 3}}})
    meter = ResponsesStreamMeter()
    meter.feed(stream)
    assert meter.image_gen is not None and meter.image_gen["output_tokens"] == 272 + 200


def test_a_cut_streams_row_prices_its_picture_estimated() -> None:
    """The record as relay.py makes it when the client leaves after the picture: the
    text estimated in chat's shape, the tool's part beside it. Its row was priced at
    the text's tokens alone (chat's shape took the row's short path)."""
    meter = ResponsesStreamMeter()
    meter.feed(_cut_stream(2, True))
    text = estimated_usage({"input": "draw a cat"}, meter.content_chars)
    headers = {HEADER: "pictures"}
    usage = with_image_gen(text, meter.pictures_so_far(), headers)
    record = RequestRecord("req-1", "POST", route="responses", model="gpt-4o",
                           deployment="gpt-4o", endpoint="https://e/", status=200,
                           total_ms=10.0, usage=usage, stream=True)
    written = usage_record(record, 1_796_212_800.0, _TABLE, _MODELS)
    text_usd = (text["prompt_tokens"] * 2.50 + text["completion_tokens"] * 10.00) / 1e6
    assert written.cost_usd == pytest.approx(text_usd + (272 + 200) * 40.00 / 1e6)
    assert written.usage_source == "estimated" and written.priced
    assert (written.prompt_tokens, written.completion_tokens) == (
        text["prompt_tokens"], text["completion_tokens"])
    # three keys of chat's shape (no total) take the other short path: the same
    usage = {"prompt_tokens": 3, "completion_tokens": 4, IMAGE_GEN: usage[IMAGE_GEN]}
    written = usage_record(replace(record, usage=usage), 1_796_212_800.0, _TABLE, _MODELS)
    assert written.cost_usd == pytest.approx((3 * 2.50 + 4 * 10.00 + 472 * 40.00) / 1e6)


# -- the hold: on every endpoint of the pool, up to ten calls ---------------------------

_DEAR_TABLE = PriceTable.shipped({"gpt-image-1-hd": {"input": 10.0, "output": 80.0}})


def _pool_guard() -> tuple[RoutingTable, BudgetGuard]:
    """gpt-4o on endpoints a and b; `pictures` (gpt-image-1) on a only; `both` on both,
    of gpt-image-1 on a and of a dearer model on b; `unpriced` on both, b's unpriced."""
    def on(endpoint: str, name: str) -> dict[str, Any]:
        return {"deployment_name": name, "endpoint": endpoint, "api_key": "k",
                "api_version": "2025-04-01-preview"}
    a, b = "https://a.openai.azure.com", "https://b.openai.azure.com"
    settings = load_settings({"models": {
        "gpt-4o": [on(a, "gpt-4o"), on(b, "gpt-4o")],
        "gpt-4o-a": [on(a, "only-a")],
        "gpt-image-1": [on(a, "pictures"), on(a, "both"), on(a, "unpriced")],
        "gpt-image-1-hd": [on(b, "both")],
        "no-price-image": [on(b, "unpriced")],
    }, "client_keys": ["c"]}, {})
    guard = BudgetGuard.__new__(BudgetGuard)
    guard.prices, guard.models = _DEAR_TABLE, deployment_models(settings)
    return RoutingTable(settings), guard


def _hold(guard: BudgetGuard, pool: Pool, name: str, hard: bool = True,
          **more: Any) -> float:
    body = {"tools": [{"type": "image_generation", "quality": "low", "size": "1024x1024"}],
            **more}
    return image_tool_usd(guard, body, {HEADER: name}, 0, pool, hard)


def test_the_hold_needs_the_deployment_on_every_endpoint_the_pool_may_pick() -> None:
    table, guard = _pool_guard()
    pool, solo = table.resolve("gpt-4o"), table.resolve("gpt-4o-a")
    assert _hold(guard, solo, "pictures") == pytest.approx(272 * 40.00 / 1e6)
    with pytest.raises(ModelNotPriced) as refused:  # b may run it, where it is not known
        _hold(guard, pool, "pictures")
    assert refused.value.status == 403 and refused.value.param == HEADER
    assert _hold(guard, pool, "both") == pytest.approx(272 * 80.00 / 1e6)  # the dearest
    with pytest.raises(ModelNotPriced):
        _hold(guard, pool, "unpriced")
    # a soft budget holds what can be priced
    assert _hold(guard, pool, "pictures", hard=False) == pytest.approx(272 * 40.00 / 1e6)


@pytest.mark.parametrize(("calls", "held"), [
    (None, 1), (1, 1), (3, 3), (10, 10), (11, 10), (1000, 10), (0, 10), (-2, 10),
    ("5", 10), (2.0, 10), (True, 10)])
def test_max_tool_calls_holds_as_many_pictures_up_to_ten(calls: Any, held: int) -> None:
    table, guard = _pool_guard()
    more = {} if calls is None else {"max_tool_calls": calls}
    assert _hold(guard, table.resolve("gpt-4o-a"), "pictures", **more) == pytest.approx(
        held * 272 * 40.00 / 1e6)


def test_the_ledger_prices_a_deployment_configured_elsewhere_at_its_dearest_estimated() -> None:
    """The request ran on endpoint c, which the configuration gives no `both`: Azure ran
    the deployment of that name there, of a model not known. Priced at the dearest of
    the models it has elsewhere, flagged estimated (it was unpriced, $0)."""
    _, guard = _pool_guard()
    usage = {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40,
             IMAGE_GEN: {"input_tokens": 0, "output_tokens": 272, "deployment": "both"}}
    record = RequestRecord("req-1", "POST", route="responses", model="gpt-4o",
                           deployment="gpt-4o", endpoint="https://c.openai.azure.com",
                           status=200, total_ms=10.0, usage=usage)
    models = {**guard.models, ("https://c.openai.azure.com", "gpt-4o"): "gpt-4o"}
    written = usage_record(record, 1_796_212_800.0, _DEAR_TABLE, models)
    assert written.cost_usd == pytest.approx((30 * 2.50 + 10 * 10.00 + 272 * 80.00) / 1e6)
    assert written.priced and written.usage_source == "estimated"
    # on its own endpoint: that one's model, measured
    written = usage_record(replace(record, endpoint="https://a.openai.azure.com"),
                           1_796_212_800.0, _DEAR_TABLE, models)
    assert written.cost_usd == pytest.approx((30 * 2.50 + 10 * 10.00 + 272 * 40.00) / 1e6)
    assert written.usage_source == "measured"
    # of a model without a price elsewhere: unpriced
    usage[IMAGE_GEN] = {**usage[IMAGE_GEN], "deployment": "unpriced"}
    assert not usage_record(record, 1_796_212_800.0, _DEAR_TABLE, models).priced
