"""`GET /metrics` needs no key, and at the label cap one render is about 1 MB that
blocks the worker's loop for 0.1-0.2 s: anyone could pin a worker with a few scrapes a
second. A render now answers the scrapes within a second after it, so a flood costs one
render a second; Prometheus, scraping every 15-60 s, sees every change."""

from __future__ import annotations

import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_metrics import P
from tests.support import ServerThread
from tests.waiting import until

SCRAPES = 20


def _scrape(url: str) -> bytes:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body


def _scrapes_counted(body: bytes) -> float:
    return sum(sample.value for family in text_string_to_metric_families(body.decode())
               for sample in family.samples
               if sample.name == P + "requests_total" and sample.labels["route"] == "/metrics")


def test_a_burst_of_scrapes_costs_one_render_a_second(gateway: ServerThread) -> None:
    started = time.monotonic()
    bodies = [_scrape(gateway.url) for _ in range(SCRAPES)]
    elapsed = time.monotonic() - started
    # each render counts the scrapes before it: a body per render
    assert len(set(bodies)) <= 1 + int(elapsed), (len(set(bodies)), elapsed)  # main: 20
    # and a second on, a scrape renders again: nothing is lost, only late
    until(lambda: _scrapes_counted(_scrape(gateway.url)) >= SCRAPES)
