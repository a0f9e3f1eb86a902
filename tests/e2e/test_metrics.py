"""`GET /metrics` scraped after known traffic and parsed with prometheus-client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.pools import chat, pool_emulator, pool_gateway, pool_settings, sdk
from tests.waiting import until

P = "azure_openai_proxy_"
MEMBERS = [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2})]


def scrape(url: str) -> dict[str, list[Any]]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items()))


def test_counters_match_the_traffic_sent() -> None:
    from openai import NotFoundError

    with pool_emulator() as emulator, pool_gateway(pool_settings(emulator.url, MEMBERS)) as gateway:
        client = sdk(gateway)
        emulator.fault("dep-a", "429", retry_after=30)
        answers = [chat(client, max_tokens=5) for _ in range(3)]
        stream = chat(client, stream=True, max_tokens=5, stream_options={"include_usage": True})
        streamed_usage = [c.usage for c in stream if c.usage is not None][-1]
        with pytest.raises(NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])

        ok = {"route": "chat/completions", "model": "gpt-4o", "status": "200"}
        # A request is counted when its handler ends, which for a stream can be just after
        # the client read [DONE]: scrape until the last one is in (bounded).
        until(lambda: value(scrape(gateway.url), P + "requests_total", **ok) >= 4)
        samples = scrape(gateway.url)

    assert value(samples, P + "requests_total", **ok) == 4
    # The first request was 429'd by dep-a and failed over to dep-b; dep-a then rested.
    assert value(samples, P + "requests_total", **ok, deployment="dep-b") == 4
    assert value(samples, P + "requests_total", route="chat/completions", status="404") == 1
    assert value(samples, P + "retries_total", reason="429") == 1
    assert value(samples, P + "failovers_total", reason="429") == 1
    assert value(samples, P + "cooldowns_total", deployment="dep-a") == 1
    assert value(samples, P + "deployment_cooldown_seconds", deployment="dep-a") > 20
    assert value(samples, P + "deployment_circuit_state", deployment="dep-a") == 0
    prompt = sum(a.usage.prompt_tokens for a in answers) + streamed_usage.prompt_tokens
    completion = sum(a.usage.completion_tokens for a in answers) + streamed_usage.completion_tokens
    assert value(samples, P + "tokens_total", deployment="dep-b", direction="in") == prompt
    assert value(samples, P + "tokens_total", deployment="dep-b", direction="out") == completion
    assert value(samples, P + "request_duration_seconds_count", route="chat/completions") == 5
    assert value(samples, P + "upstream_ttfb_seconds_count", deployment="dep-b") == 4
    assert value(samples, P + "in_flight_requests") == 1  # the scrape itself


def test_metrics_off_means_no_endpoint() -> None:
    with pool_emulator() as emulator, pool_gateway(
        pool_settings(emulator.url, MEMBERS, metrics=False)
    ) as gateway:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(gateway.url + "/metrics", timeout=10)
        assert caught.value.code in (401, 404)
