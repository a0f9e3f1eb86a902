"""One caller cannot trip a shared deployment's circuit for everyone: two client keys
through the gateway to the emulator's fault injection, a fake clock for the circuits
(balancing/circuit.py, balancing/callers.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY
from tests.e2e.pools import (
    MODEL,
    FakeClock,
    chat,
    health,
    hits,
    pool_config,
    pool_emulator,
    pool_gateway,
    sdk,
)
from tests.e2e.test_ledger import _virtual_key
from tests.e2e.test_metrics import P, scrape, value
from tests.support import ServerThread, bound_socket

OTHER_KEY = "sk-gateway-other-tenant-key-0123456789"
ONE = [("dep-a", {})]


def _settings(url: str, **extra: Any) -> Any:
    config = pool_config(url, ONE, circuit_failures=2, circuit_open_seconds=30, **extra)
    config["client_keys"] = [CLIENT_KEY, OTHER_KEY]
    return load_settings(config, {})


def _other(gateway: ServerThread, key: str = OTHER_KEY) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)


def _row(gateway: ServerThread) -> dict[str, Any]:
    (row,) = health(gateway)["deployments"]
    return dict(row)


def _refused(client: Any) -> Any:
    from openai import APIStatusError

    with pytest.raises(APIStatusError) as caught:
        chat(client)
    return caught.value.response


def test_one_keys_streak_of_500s_holds_off_that_key_only() -> None:
    clock = FakeClock()
    with pool_emulator() as emulator, pool_gateway(_settings(emulator.url), clock) as gateway:
        a, b = sdk(gateway), _other(gateway)
        emulator.fault("dep-a", "500", count=1)
        assert _refused(a).status_code == 500
        assert chat(b).choices[0].message.content  # b's success does not excuse a's streak
        emulator.fault("dep-a", "500", count=1)
        assert _refused(a).status_code == 500
        seen = len(hits(emulator))
        held = _refused(a)  # a is held off, without bothering Azure
        assert held.status_code == 503
        assert held.json()["error"]["code"] == "no_deployment_available"
        assert held.headers["retry-after"] == "30"
        assert "yours are paused (other callers' are served)" in held.json()["error"]["message"]
        assert len(hits(emulator)) == seen
        for _ in range(3):
            assert chat(b).choices[0].message.content  # b keeps the deployment
        row = _row(gateway)
        assert row["circuit"] == "closed" and row["available"]
        assert row["callers_circuit_open"] == 1
        assert CLIENT_KEY not in str(health(gateway))
        samples = scrape(gateway.url)
        assert value(samples, P + "deployment_caller_circuits_open", deployment="dep-a") == 1
        assert value(samples, P + "deployment_circuit_state", deployment="dep-a") == 0
        assert value(samples, P + "circuit_opened_total", deployment="dep-a") == 0
        clock.advance(30)
        assert chat(a).choices[0].message.content  # a's own probe, answered
        assert _row(gateway)["callers_circuit_open"] == 0


def test_one_keys_500s_in_a_row_leave_the_deployment_to_the_other_key() -> None:
    with pool_emulator() as emulator, pool_gateway(_settings(emulator.url), FakeClock()) as gateway:
        a, b = sdk(gateway), _other(gateway)
        emulator.fault("dep-a", "500", count=2)
        assert [_refused(a).status_code for _ in range(3)] == [500, 500, 503]
        assert chat(b).choices[0].message.content  # (before: b got the 503 too)
        assert hits(emulator) == [("dep-a", 500), ("dep-a", 500), ("dep-a", 200)]


def test_a_streak_of_500s_across_two_keys_opens_it_for_all() -> None:
    with pool_emulator() as emulator, pool_gateway(_settings(emulator.url), FakeClock()) as gateway:
        a, b = sdk(gateway), _other(gateway)
        emulator.fault("dep-a", "500", count=2)
        assert _refused(a).status_code == 500
        assert _refused(b).status_code == 500
        assert _row(gateway)["circuit"] == "open"
        assert _refused(a).status_code == 503
        assert _refused(b).status_code == 503
        assert len(hits(emulator)) == 2


def test_one_keys_connection_refusals_open_it_for_all() -> None:
    with bound_socket() as refusing:
        dead = f"http://127.0.0.1:{refusing.getsockname()[1]}"
        config = pool_config(dead, ONE, circuit_failures=2, circuit_open_seconds=30)
        config["models"][MODEL][0]["api_key"] = AZURE_KEY
        config["client_keys"] = [CLIENT_KEY, OTHER_KEY]
        with pool_gateway(load_settings(config, {}), FakeClock()) as gateway:
            a = sdk(gateway)
            for _ in range(2):
                assert _refused(a).status_code == 502  # no connection: everyone's failure
            assert _row(gateway)["circuit"] == "open"
            held = _refused(_other(gateway))
            assert held.status_code == 503
            assert held.json()["error"]["code"] == "no_deployment_available"


def test_one_virtual_keys_500s_hold_off_that_key_not_another(
    tmp_path: Path,
) -> None:
    database = tmp_path / "gw.db"
    with pool_emulator() as emulator, pool_gateway(
        _settings(emulator.url, database=f"sqlite:///{database}"), FakeClock()
    ) as gateway:
        a = _other(gateway, _virtual_key(gateway, database, "tenant-a")[1])
        b = _other(gateway, _virtual_key(gateway, database, "tenant-b")[1])
        emulator.fault("dep-a", "500", count=2)
        assert [_refused(a).status_code for _ in range(3)] == [500, 500, 503]
        assert chat(b).choices[0].message.content
        assert _row(gateway)["callers_circuit_open"] == 1


def test_in_a_pool_the_held_off_key_goes_to_the_next_deployment_and_the_other_stays() -> None:
    with pool_emulator() as emulator:
        config = pool_config(emulator.url, [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2})],
                             circuit_failures=2, circuit_open_seconds=30)
        config["client_keys"] = [CLIENT_KEY, OTHER_KEY]
        with pool_gateway(load_settings(config, {}), FakeClock()) as gateway:
            a, b = sdk(gateway), _other(gateway)
            emulator.fault("dep-a", "500", count=2)
            for _ in range(2):
                assert _refused(a).status_code == 500  # a POST answered 500: not resent
            assert chat(a).choices[0].message.content
            assert hits(emulator)[-1] == ("dep-b", 200)
            assert chat(b).choices[0].message.content
            assert hits(emulator)[-1] == ("dep-a", 200)


def test_a_keys_failing_probe_does_not_reopen_the_circuit_for_the_other_key() -> None:
    clock = FakeClock()
    with pool_emulator() as emulator, pool_gateway(_settings(emulator.url), clock) as gateway:
        a, b = sdk(gateway), _other(gateway)
        emulator.fault("dep-a", "drop", count=2)
        for _ in range(2):
            assert _refused(a).status_code == 502  # dropped: everyone's failure
        assert _row(gateway)["circuit"] == "open"
        clock.advance(30)
        emulator.fault("dep-a", "500", count=1)
        assert _refused(a).status_code == 500  # a's request was the probe: its own 500
        assert chat(b).choices[0].message.content  # b probes next, and closes it
        assert _row(gateway)["circuit"] == "closed"


def test_one_keys_requests_that_time_out_after_sending_hold_off_that_key_only() -> None:
    with pool_emulator() as emulator, pool_gateway(
        _settings(emulator.url, upstream={"read_timeout": 0.3}), FakeClock()
    ) as gateway:
        a, b = sdk(gateway), _other(gateway)
        emulator.fault("dep-a", "hang", count=2, seconds=1.0)
        # Azure read them and never answered in time: maybe their own doing (their size)
        assert [_refused(a).status_code for _ in range(3)] == [504, 504, 503]
        assert chat(b).choices[0].message.content
        assert _row(gateway)["circuit"] == "closed"


def _while_probing(gateway: ServerThread, probe: Any, then: Any) -> Any:
    """`then()` while `probe()` hangs upstream, the half-open circuit's probe still out."""
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        deadline = time.monotonic() + 10
        while _row(gateway)["in_flight"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return then()
    finally:
        prober.join()


@pytest.mark.parametrize(("fault", "status", "asker"), [
    ("500", 500, CLIENT_KEY),  # a's own circuit, a's own probe out
    ("drop", 502, OTHER_KEY),  # the deployment's circuit, a's probe out, b asks
])
def test_a_request_refused_while_the_circuits_probe_is_out_is_told_when_to_retry(
    fault: str, status: int, asker: str,
) -> None:
    clock = FakeClock()
    with pool_emulator() as emulator, pool_gateway(
        _settings(emulator.url, upstream={"read_timeout": 1.0}), clock
    ) as gateway:
        a = sdk(gateway)
        emulator.fault("dep-a", fault, count=2)
        assert [_refused(a).status_code for _ in range(2)] == [status, status]
        clock.advance(30)
        emulator.fault("dep-a", "hang", count=1, seconds=3.0)
        held = _while_probing(gateway, lambda: _refused(a), lambda: _refused(_other(gateway, asker)))
        assert held.status_code == 503
        assert held.json()["error"]["code"] == "no_deployment_available"
        # (was none, then circuit_open_seconds: the openai SDK slept 30 s a retry while
        # the probe came back in about a request's time)
        assert held.headers["retry-after"] == "1"
        assert held.headers["retry-after-ms"] == "1000"
