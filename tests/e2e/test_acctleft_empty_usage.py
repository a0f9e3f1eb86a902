"""An answer whose `usage` is `{}`, or has every count null, was recorded as free (0
tokens, $0, `measured` or no usage at all) and gave its whole TPM reservation back;
Azure generated it and bills it. It is recorded as a stream cut short is: estimated from
the prompt and the answer's text, flagged `estimated`, never zero.

The gateway with a ledger over the emulator, whose `empty_usage` / `null_usage` faults
(not defaults: no source says Azure sends either) answer so."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from azure_openai_proxy.governance.estimate import estimated_usage
from tests.e2e.conftest import CLIENT_KEY, Emulator
from tests.e2e.test_ledger import _DEAR, ledger_gateway, records  # noqa: F401
from tests.support import ServerThread

_CHAT = {"model": "gpt-4o", "max_tokens": 20,
         "messages": [{"role": "user", "content": "tell me about Lisbon, " * 6}]}
_RESPONSES = {"model": "gpt-4o", "input": "tell me about Lisbon, " * 6,
              "max_output_tokens": 20}


def _text(route: str, answer: dict[str, Any]) -> str:
    if route == "chat/completions":
        return str(answer["choices"][0]["message"]["content"])
    return "".join(part["text"] for item in answer["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


# Each test runs for both faults, on chat and on the Responses API.
_FAULTED = [pytest.mark.parametrize("fault", ["empty_usage", "null_usage"]),
            pytest.mark.parametrize(("route", "body"), [("chat/completions", _CHAT),
                                                        ("responses", _RESPONSES)])]


def _faulted(emulator: Emulator, start: Callable[..., ServerThread], fault: str,
             route: str, body: dict[str, Any]) -> tuple[ServerThread, httpx.Response]:
    """A gateway with a ledger, and its answer to `body` on `route`, the emulator's
    usage made so by `fault`."""
    gateway = start(emulator, **_DEAR)
    emulator.fault("gpt-4o", fault)
    answer = httpx.post(f"{gateway.url}/v1/{route}", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    assert answer.status_code == 200, answer.text
    return gateway, answer


@_FAULTED[0]
@_FAULTED[1]
def test_an_answer_without_counts_is_recorded_estimated(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        fault: str, route: str, body: dict[str, Any]) -> None:
    gateway, answer = _faulted(emulator, ledger_gateway, fault, route, body)
    usage = answer.json()["usage"]
    assert usage == {} or set(usage.values()) == {None}  # the client gets Azure's as it is
    [record] = [r for r in records(gateway) if r.route == route]
    expected = estimated_usage(body, len(_text(route, answer.json())))
    # main: measured (null counts) or none ({}), 0 tokens, $0
    assert record.usage_source == "estimated"
    assert (record.prompt_tokens, record.completion_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"])
    assert record.prompt_tokens > 0 and record.completion_tokens > 0 and record.cost_usd > 0


def test_an_answer_with_counts_is_recorded_as_azure_said(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread]) -> None:  # noqa: F811
    gateway = ledger_gateway(emulator, **_DEAR)
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=_CHAT, timeout=30,
                        headers={"Authorization": f"Bearer {CLIENT_KEY}"}).json()
    [record] = [r for r in records(gateway) if r.route == "chat/completions"]
    assert record.usage_source == "measured"
    assert (record.prompt_tokens, record.completion_tokens) == (
        answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])


def _streamed_text(route: str, events: list[dict[str, Any]]) -> str:
    if route == "chat/completions":
        return "".join(str(c["delta"].get("content") or "") for e in events
                       for c in e.get("choices", []))
    return "".join(str(e["delta"]) for e in events
                   if e.get("type") == "response.output_text.delta")


@_FAULTED[0]
@_FAULTED[1]
def test_a_stream_whose_usage_has_no_counts_is_recorded_estimated(
        emulator: Emulator, ledger_gateway: Callable[..., ServerThread],  # noqa: F811
        fault: str, route: str, body: dict[str, Any]) -> None:
    streamed: dict[str, Any] = {**body, "stream": True}
    if route == "chat/completions":
        streamed["stream_options"] = {"include_usage": True}
    gateway, answer = _faulted(emulator, ledger_gateway, fault, route, streamed)
    events = [json.loads(line[6:]) for line in answer.text.splitlines()
              if line.startswith("data: {")]
    usages = [e["usage"] if "usage" in e else (e.get("response") or {}).get("usage")
              for e in events]
    assert any(u is not None and not any(u.values()) for u in usages)  # the fault's
    [record] = [r for r in records(gateway) if r.route == route]
    expected = estimated_usage(body, len(_streamed_text(route, events)))
    # main: null counts were taken as 0 tokens, measured ({} was estimated already)
    assert record.usage_source == "estimated"
    assert (record.prompt_tokens, record.completion_tokens) == (
        expected["prompt_tokens"], expected["completion_tokens"])
    assert record.completion_tokens > 0 and record.cost_usd > 0
