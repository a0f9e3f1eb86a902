"""The default endpoint's own label set (its files, batches, vector stores: requests that
name no model, sent to the endpoint the operator configured as deployment `default`)
is the operator's, not a name a client chose: the junk names clients send to the
default endpoint filled the cap, and then every such request was counted as model and
deployment `_other` (a files call names no model: its model label was "" before)."""

from __future__ import annotations

from tests.e2e.conftest import Emulator
from tests.e2e.test_metrics import P, scrape
from tests.e2e.test_ops_metric_labels import CAP, capped, client_of, junk  # noqa: F401


def test_the_default_endpoints_own_requests_keep_their_labels_past_the_cap(
        emulator: Emulator, capped: str) -> None:  # noqa: F811
    url = capped
    with client_of(url) as client:
        junk(client, 2 * CAP)
        assert client.get("/v1/files").status_code == 200
        made = client.post("/v1/files", data={"purpose": "batch"},
                           files={"file": ("a.jsonl", b"{}\n")})
        assert made.status_code in (200, 201), made.text
    requests = [s.labels for s in scrape(url)[P + "requests_total"]]
    host = emulator.url.partition("://")[2]
    home = {"route": "files", "model": "", "deployment": "default", "endpoint": host}
    assert {**home, "status": "200"} in requests, [r for r in requests if r["route"] == "files"]
    assert {**home, "status": str(made.status_code)} in requests  # main: both _other
    assert {r["model"] for r in requests if r["route"] == "files"} == {""}
    assert len(requests) <= CAP + 3  # the clients' names stay bounded
