"""Failover through the gateway, driven by the official SDK (its retries off) against
the emulator's fault injection. Cooldowns and circuits are moved along by a fake clock
held by the test, so nothing here depends on how fast the machine is; only the
"wait for a short retry-after" test really waits (a few hundred milliseconds)."""

from __future__ import annotations

from collections import Counter

import pytest

from azure_openai_proxy.config import load_settings
from tests.e2e.conftest import AZURE_KEY
from tests.e2e.pools import (
    MODEL,
    NAMES,
    FakeClock,
    chat,
    chat_deployment,
    circuit_of,
    hits,
    pool_config,
    pool_emulator,
    pool_gateway,
    pool_settings,
    sdk,
)
from tests.support import bound_socket

PRIMARY_FIRST = [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2}), ("dep-c", {"priority": 2})]


def test_a_429_fails_over_and_the_deployment_rests_until_its_retry_after() -> None:
    clock = FakeClock()
    with pool_emulator() as emulator, pool_gateway(
        pool_settings(emulator.url, PRIMARY_FIRST), clock
    ) as gateway:
        client = sdk(gateway)
        emulator.fault("dep-a", "429", retry_after=5)
        assert chat(client).choices[0].message.content
        assert hits(emulator)[0] == ("dep-a", 429)
        assert hits(emulator)[1][0] in ("dep-b", "dep-c")
        for _ in range(4):
            chat(client)
            clock.advance(1.0)  # 4 s of the 5 s retry-after pass
        assert [d for d, _ in hits(emulator)].count("dep-a") == 1
        clock.advance(1.0)
        chat(client)
        assert hits(emulator)[-1] == ("dep-a", 200)  # back on the primary after its cooldown


def test_dropped_connections_open_the_circuit_which_half_opens_and_recovers() -> None:
    from openai import InternalServerError

    clock = FakeClock()
    with pool_emulator() as emulator:
        settings = pool_settings(emulator.url, PRIMARY_FIRST, circuit_failures=2,
                                 circuit_open_seconds=30)
        with pool_gateway(settings, clock) as gateway:
            client = sdk(gateway)
            emulator.fault("dep-a", "drop", count=2)
            # A POST dropped after Azure read it may be running: the client gets the
            # 502, never a second run elsewhere (balancing/resend.py).
            with pytest.raises(InternalServerError):
                chat(client)
            assert circuit_of(gateway, "dep-a") == "closed"
            with pytest.raises(InternalServerError):
                chat(client)
            assert circuit_of(gateway, "dep-a") == "open"
            assert [d for d, _ in hits(emulator)] == ["dep-a", "dep-a"]
            seen = len(hits(emulator))
            chat(client)
            assert "dep-a" not in [d for d, _ in hits(emulator)[seen:]]  # not tried while open
            clock.advance(30.0)
            assert circuit_of(gateway, "dep-a") == "open"  # until a probe goes through
            chat(client)
            assert hits(emulator)[-1] == ("dep-a", 200)  # the half-open probe
            assert circuit_of(gateway, "dep-a") == "closed"
            chat(client)
            assert hits(emulator)[-1] == ("dep-a", 200)


def test_a_failed_probe_reopens_the_circuit() -> None:
    from openai import InternalServerError

    clock = FakeClock()
    with pool_emulator() as emulator:
        settings = pool_settings(emulator.url, PRIMARY_FIRST, circuit_failures=1,
                                 circuit_open_seconds=10)
        with pool_gateway(settings, clock) as gateway:
            client = sdk(gateway)
            # Dropped connections count for everyone (a 500 streak of one caller would
            # open only its own circuit: test_caller_circuits.py).
            emulator.fault("dep-a", "drop", count=2)
            with pytest.raises(InternalServerError):
                chat(client)  # a POST dropped after Azure read it: not sent again
            assert circuit_of(gateway, "dep-a") == "open"
            chat(client)  # dep-a rests: dep-b answers
            clock.advance(10.0)
            with pytest.raises(InternalServerError):
                chat(client)  # the probe is dropped too
            assert [d for d, _ in hits(emulator)].count("dep-a") == 2
            assert circuit_of(gateway, "dep-a") == "open"


def test_a_post_reset_after_azure_read_it_is_not_sent_to_another_deployment() -> None:
    from openai import InternalServerError

    with pool_emulator() as emulator, pool_gateway(
        pool_settings(emulator.url, PRIMARY_FIRST)
    ) as gateway:
        emulator.fault("dep-a", "drop")
        with pytest.raises(InternalServerError) as caught:
            chat(sdk(gateway))
        assert caught.value.response.status_code == 502
        assert caught.value.response.json()["error"]["code"] == "upstream_unreachable"
        assert [d for d, _ in hits(emulator)] == ["dep-a"]  # dep-b and dep-c saw nothing


def test_a_connect_refused_deployment_is_failed_over_even_for_a_post() -> None:
    with bound_socket() as refusing, pool_emulator() as emulator:
        # Bound, never listening: a connection to it is refused, and the port cannot be
        # taken by anyone else while the test runs.
        dead = f"http://127.0.0.1:{refusing.getsockname()[1]}"
        config = pool_config(emulator.url, [("dep-b", {"priority": 2})])
        config["models"][MODEL].insert(0, {"deployment_name": "dep-a", "endpoint": dead,
                                           "api_key": AZURE_KEY, "priority": 1})
        with pool_gateway(load_settings(config, {})) as gateway:
            assert chat(sdk(gateway)).choices[0].message.content
        assert hits(emulator) == [("dep-b", 200)]


def test_all_three_429_with_a_short_retry_after_waits_and_succeeds() -> None:
    with pool_emulator() as emulator:
        settings = pool_settings(emulator.url, [(n, {}) for n in NAMES], max_attempts=6,
                                 retry_budget_seconds=10)
        with pool_gateway(settings) as gateway:
            for name, seconds in zip(NAMES, (0.4, 0.2, 0.3), strict=True):
                emulator.fault(name, "429", retry_after=seconds)
            answer = chat(sdk(gateway))
            assert answer.choices[0].message.content
            log = hits(emulator)
            assert sorted(log[:3]) == [("dep-a", 429), ("dep-b", 429), ("dep-c", 429)]
            # The first deployment to come back is the one with the shortest retry-after.
            assert log[3:] == [("dep-b", 200)]


def test_all_three_429_with_a_long_retry_after_gives_429_with_the_shortest() -> None:
    from openai import RateLimitError

    with pool_emulator() as emulator:
        settings = pool_settings(emulator.url, [(n, {}) for n in NAMES], retry_budget_seconds=2)
        with pool_gateway(settings) as gateway:
            for name, seconds in zip(NAMES, (20, 8, 30), strict=True):
                emulator.fault(name, "429", retry_after=seconds)
            client = sdk(gateway)
            with pytest.raises(RateLimitError) as caught:
                chat(client)
            headers = caught.value.response.headers
            assert headers["retry-after"] == "8"
            assert 7000 < int(headers["retry-after-ms"]) <= 8000
            assert len(hits(emulator)) == 3
            # Next request: every deployment is known to be cooling; Azure is not bothered.
            with pytest.raises(RateLimitError) as again:
                chat(client)
            assert again.value.response.headers["retry-after"] == "8"
            assert len(hits(emulator)) == 3


def test_all_circuits_open_gives_503_with_retry_after() -> None:
    from openai import InternalServerError

    clock = FakeClock()
    with pool_emulator() as emulator:
        settings = pool_settings(emulator.url, [(n, {}) for n in NAMES], circuit_failures=1,
                                 circuit_open_seconds=12)
        with pool_gateway(settings, clock) as gateway:
            emulator.fault("*", "503", count=3)
            client = sdk(gateway)
            with pytest.raises(InternalServerError):
                chat(client)  # Azure's own 503 after three tries
            with pytest.raises(InternalServerError) as caught:
                chat(client)
            response = caught.value.response
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "no_deployment_available"
            assert response.headers["retry-after"] == "12"
            assert len(hits(emulator)) == 3


def test_a_client_error_is_not_retried() -> None:
    from openai import BadRequestError

    with pool_emulator() as emulator, pool_gateway(
        pool_settings(emulator.url, [(n, {}) for n in NAMES])
    ) as gateway:
        with pytest.raises(BadRequestError):
            chat(sdk(gateway), extra_body={"frobnicate": 1})  # the emulator refuses it: 400
        assert len(hits(emulator)) == 1


def test_a_mid_stream_cut_is_not_retried_and_ends_with_an_error_event() -> None:
    from openai import APIError

    with pool_emulator() as emulator, pool_gateway(
        pool_settings(emulator.url, PRIMARY_FIRST)
    ) as gateway:
        emulator.fault("dep-a", "cut", after_frames=2)
        stream = chat(sdk(gateway), "a long answer please", stream=True, max_tokens=40)
        received = []
        with pytest.raises(APIError):
            for chunk in stream:
                received.append(chunk)
        assert received  # some frames arrived before the cut
        assert [d for d, _ in hits(emulator)] == ["dep-a"]


def test_weights_are_honoured_within_statistical_bounds() -> None:
    members = [("dep-a", {"weight": 1}), ("dep-b", {"weight": 2}), ("dep-c", {"weight": 5})]
    with pool_emulator() as emulator, pool_gateway(pool_settings(emulator.url, members), seed=11) as gateway:
        client = sdk(gateway)
        total = 240
        for _ in range(total):
            chat(client, "hi", max_tokens=1)
        counts = Counter(d for d, _ in hits(emulator))
        expected = {"dep-a": total / 8, "dep-b": total * 2 / 8, "dep-c": total * 5 / 8}
        chi2 = sum((counts[k] - e) ** 2 / e for k, e in expected.items())
        assert chi2 < 13.8, counts  # 2 degrees of freedom, p = 0.001


def test_priority_two_serves_only_when_every_priority_one_is_unavailable() -> None:
    clock = FakeClock()
    members = [("dep-a", {"priority": 1}), ("dep-b", {"priority": 1}), ("dep-c", {"priority": 2})]
    with pool_emulator() as emulator, pool_gateway(pool_settings(emulator.url, members), clock) as gateway:
        client = sdk(gateway)
        for _ in range(12):
            chat(client, max_tokens=1)
        counts = Counter(d for d, _ in hits(emulator))
        assert counts["dep-c"] == 0 and counts["dep-a"] > 0 and counts["dep-b"] > 0
        emulator.fault("dep-a", "429", retry_after=30)
        emulator.fault("dep-b", "429", retry_after=30)
        for _ in range(3):
            chat(client, max_tokens=1)
        assert hits(emulator)[-1] == ("dep-c", 200)
        assert Counter(hits(emulator))[("dep-c", 200)] == 3  # both priority-1 rest for 30 s
        clock.advance(30.0)
        chat(client, max_tokens=1)
        assert hits(emulator)[-1][0] in ("dep-a", "dep-b")


def test_remaining_tokens_steer_traffic_away_before_any_429() -> None:
    small = chat_deployment("dep-a", tpm=400)
    with pool_emulator(small, chat_deployment("dep-b"), chat_deployment("dep-c")) as emulator:
        members = [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2}), ("dep-c", {"priority": 2})]
        with pool_gateway(pool_settings(emulator.url, members)) as gateway:
            client = sdk(gateway)
            for _ in range(20):
                chat(client, "tell me something", max_tokens=30)
            log = hits(emulator)
            assert all(status == 200 for _, status in log), log
            to_small = [d for d, _ in log].count("dep-a")
            assert 3 <= to_small < 20  # used while it had room, then avoided
            assert log[-1][0] in ("dep-b", "dep-c")
