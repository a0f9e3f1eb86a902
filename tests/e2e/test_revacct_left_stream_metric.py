"""A static client key (no database: the tokens metric is its only count) starts a
background Responses stream and leaves it after part of its output; Azure finishes and
the client reads the response. The metric counts Azure's usage at least once, and the
prompt once: the `POST`'s estimate (its prompt, what was relayed), then the read's
rest (gateway/rereads.py).

Here the relay's task writes the left stream's estimate before the `POST`'s handler
ends, so this passes on branch acct too: it guards the end-to-end count. The case of an
estimate written after the handler ended (after the metric counted the record), which
acct's read left out though nothing had counted it, is pinned by
tests/unit/test_acct_cut_estimates.py (`..._counted_when_the_post_ended`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.e2e.test_ledger import sdk
from tests.e2e.test_metrics import P, scrape, value
from tests.support import ServerThread, serve
from tests.waiting import until


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    with serve(lambda: create_emulator_app(emulator_config(
            token_ms=150, completion_tokens=24, burst_tokens=1))) as server:
        yield Emulator(server)


def test_a_left_background_streams_relayed_output_is_counted_in_the_tokens_metric(
        slow_emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> None:
    gateway = start_gateway(gateway_settings(slow_emulator.url))
    response_id, deltas = None, 0
    with httpx.stream("POST", gateway.url + "/v1/responses", timeout=30,
                      headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                      json={"model": "gpt-4o", "input": "tell me a long story " * 8,
                            "background": True, "stream": True,
                            "max_output_tokens": 24}) as answer:
        for line in answer.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "response.created":
                response_id = event["response"]["id"]
            elif event["type"] == "response.output_text.delta":
                deltas += 1
                if deltas == 12:
                    break  # the client leaves, much of the output relayed
            elif event["type"] == "response.completed":
                pytest.fail("the stream ended before the client left")
    assert response_id is not None
    until(lambda: value(scrape(gateway.url), P + "requests_total", route="responses") >= 1,
          timeout=20, message="the left stream's request never counted")
    client = sdk(gateway, CLIENT_KEY)
    reads = [client.responses.retrieve(response_id)]
    until(lambda: reads.append(client.responses.retrieve(response_id))
          or reads[-1].status == "completed",
          timeout=60, message="the background response never completed")
    read = reads[-1]
    until(lambda: value(scrape(gateway.url), P + "requests_total", route="responses")
          >= 1 + len(reads), timeout=20, message="the reads never counted")
    assert read.usage is not None and read.usage.output_tokens > 12
    samples = scrape(gateway.url)
    counted_in = value(samples, P + "tokens_total", direction="in")
    counted_out = value(samples, P + "tokens_total", direction="out")
    # acct: counted_out was Azure's output less the relayed output's estimate
    assert counted_out >= read.usage.output_tokens, (counted_out, read.usage)
    assert counted_in >= read.usage.input_tokens, (counted_in, read.usage)
    # and counted once: the prompt's estimate, then the rest
    assert counted_in < 2 * read.usage.input_tokens, (counted_in, read.usage)
