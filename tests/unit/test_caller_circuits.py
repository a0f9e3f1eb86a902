"""Whose failures open which circuit (balancing/circuit.py, balancing/callers.py), with
plain data and the time passed in; and the balancer's leases doing it per caller."""

from __future__ import annotations

import random
from typing import Any

import pytest

from azure_openai_proxy.auth import ANONYMOUS, Caller, ClientKeyring, caller_id
from azure_openai_proxy.balancing import Ordered, plan
from azure_openai_proxy.balancing.callers import MAX_CALLERS, CallerCircuits
from azure_openai_proxy.balancing.circuit import CircuitBreaker
from azure_openai_proxy.balancing.state import DeploymentKey, DeploymentState
from azure_openai_proxy.balancing.strategies import Member, strategy_named
from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import NoDeploymentAvailable
from azure_openai_proxy.gateway.balancer import Balancer
from azure_openai_proxy.governance.model import VirtualKey
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, RoutingTable


def test_one_callers_own_failures_never_open_the_deployments_circuit() -> None:
    breaker = CircuitBreaker(3, 30.0)
    for _ in range(10):
        assert not breaker.failed(0.0, "key:a", own=True)
    assert breaker.state == "closed"


def test_own_failures_of_two_callers_in_one_streak_open_it() -> None:
    breaker = CircuitBreaker(3, 30.0)
    assert not breaker.failed(0.0, "key:a", own=True)
    assert not breaker.failed(0.0, "key:a", own=True)
    assert breaker.failed(0.0, "key:b", own=True)
    assert breaker.state == "open"


def test_failures_that_are_not_the_requests_own_open_it_whoever_sent_them() -> None:
    breaker = CircuitBreaker(3, 30.0)
    assert not breaker.failed(0.0, "key:a")
    assert not breaker.failed(0.0, "key:a")
    assert breaker.failed(0.0, "key:a")
    assert breaker.opened_until == 30.0


def test_a_success_ends_the_streak_and_who_was_in_it() -> None:
    breaker = CircuitBreaker(2, 30.0)
    breaker.failed(0.0, "key:a", own=True)
    breaker.succeeded()
    assert not breaker.failed(0.0, "key:b", own=True)  # a new streak, of b alone
    assert breaker.state == "closed"


def test_a_caller_whose_circuit_opened_is_forgotten_by_the_deployments_streak() -> None:
    breaker = CircuitBreaker(3, 30.0)
    breaker.failed(0.0, "key:a", own=True)
    breaker.failed(0.0, "key:a", own=True)
    breaker.forget("key:a")
    # b's one unlucky failure does not join a's streak into "spread" and open it for all
    assert not breaker.failed(0.0, "key:b", own=True)
    assert breaker.state == "closed"


def test_one_callers_failing_probe_lets_another_caller_probe_and_a_second_reopens() -> None:
    breaker = CircuitBreaker(1, 10.0)
    breaker.failed(0.0, "key:a")  # a reset: open for all
    assert breaker.admit(10.0)
    assert not breaker.failed(10.0, "key:a", own=True)  # a's 500: proves nothing for b
    assert breaker.state == "half-open" and breaker.available(10.0)
    assert breaker.admit(10.0)
    assert not breaker.failed(10.0, "key:a", own=True)  # a again, and again
    assert breaker.admit(10.0)
    breaker.succeeded()  # b's probe
    assert breaker.state == "closed"
    breaker.failed(20.0, "key:a")
    breaker.admit(30.0)
    breaker.failed(30.0, "key:a", own=True)
    breaker.admit(30.0)
    assert breaker.failed(30.0, "key:b", own=True)  # two callers' probes failed: reopened
    assert breaker.state == "open" and breaker.opened_until == 40.0
    assert breaker.admit(40.0)
    assert not breaker.failed(40.0, "key:b", own=True)  # a new half-open period


def test_a_failed_probe_that_is_nobodys_request_reopens_at_once() -> None:
    breaker = CircuitBreaker(1, 10.0)
    breaker.failed(0.0, "key:a")
    breaker.admit(10.0)
    assert breaker.failed(10.0, "key:a")
    assert breaker.state == "open"


def test_a_callers_circuit_opens_cools_probes_and_closes_on_its_own_success() -> None:
    circuits = CallerCircuits()
    assert not circuits.failed("key:a", 0.0, 2, 10.0)
    assert not circuits.blocks("key:a", 0.0)
    assert circuits.failed("key:a", 1.0, 2, 10.0)
    assert circuits.blocks("key:a", 5.0) and not circuits.blocks("key:b", 5.0)
    assert circuits.available_at("key:a") == 11.0 and circuits.open_count(5.0) == 1
    assert not circuits.admit("key:b", 11.0)
    assert circuits.admit("key:a", 11.0)  # a's probe; a's other requests wait for it
    assert circuits.blocks("key:a", 11.0)
    circuits.succeeded("key:a")
    assert not circuits and circuits.open_count(12.0) == 0


def test_a_callers_failed_probe_reopens_and_an_abandoned_one_lets_another_go() -> None:
    circuits = CallerCircuits()
    circuits.failed("key:a", 0.0, 1, 10.0)
    assert circuits.admit("key:a", 10.0)
    circuits.abandoned("key:a")
    assert circuits.admit("key:a", 10.0)
    assert circuits.failed("key:a", 10.5, 1, 10.0)
    assert circuits.blocks("key:a", 20.0) and not circuits.blocks("key:a", 20.5)


def test_caller_circuits_are_bounded_and_keep_open_ones_over_closed_ones() -> None:
    circuits = CallerCircuits()
    circuits.failed("open", 0.0, 1, 60.0)
    for n in range(MAX_CALLERS * 3):
        circuits.failed(f"key:{n}", 0.0, 2, 60.0)
    assert len(circuits) == MAX_CALLERS
    assert circuits.blocks("open", 1.0)


def _members() -> tuple[Member, Member]:
    settings = load_settings({"models": {"m": [
        {"deployment_name": n, "endpoint": f"https://{n}.example.com", "api_key": "k"} for n in "ab"
    ]}, "client_keys": ["c"]}, {})
    a, b = settings.deployments
    return (Member(a, DeploymentState(DeploymentKey(a.endpoint, "a"), CircuitBreaker(1, 10.0))),
            Member(b, DeploymentState(DeploymentKey(b.endpoint, "b"), CircuitBreaker(1, 10.0))))


def test_the_plan_leaves_out_a_deployment_only_for_the_caller_it_holds_off() -> None:
    members = _members()
    members[0].state.callers.failed("key:a", 0.0, 1, 10.0)
    def for_caller(caller: str, chosen: tuple[Member, ...] = members) -> object:
        return plan(chosen, now=1.0, deadline=60.0, cost=1, strategy=strategy_named("weighted"),
                    rng=random.Random(0), caller=caller)

    for_a, for_b = for_caller("key:a"), for_caller("key:b")
    assert isinstance(for_a, Ordered) and isinstance(for_b, Ordered)
    assert [m.settings.deployment_name for m in for_a.candidates] == ["b"]
    assert sorted(m.settings.deployment_name for m in for_b.candidates) == ["a", "b"]
    alone = for_caller("key:a", members[:1])
    assert alone == ("held", 9.0)  # a 503 with a's reopening time, not a wait
    members[0].state.breaker.failed(1.0, "key:b")  # and the deployment's own circuit opens
    assert for_caller("key:a", members[:1])[0] == "unavailable"


def test_a_caller_is_its_virtual_key_its_client_keys_hash_or_anonymous() -> None:
    key = VirtualKey(id="vk_1", name="n", secret_hash="h", prefix="p")
    assert caller_id(Caller(None, key=key)) == "key:vk_1"
    assert caller_id(None) == caller_id(Caller(None)) == ANONYMOUS
    ring = ClientKeyring(("secret-one", "secret-two"))
    one, two = ring.authenticate_key("secret-one"), ring.authenticate_key("secret-two")
    assert caller_id(one) != caller_id(two)
    assert "secret" not in caller_id(one) + caller_id(two)
    assert "sk-azure" not in caller_id(Caller("sk-azure-key"))


def _balancer(threshold: int = 2) -> tuple[Balancer, Pool, list[float]]:
    settings = load_settings({"models": {"m": [
        {"deployment_name": "a", "endpoint": "https://a.example.com", "api_key": "k"},
    ]}, "client_keys": ["c"], "circuit_failures": threshold, "circuit_open_seconds": 10}, {})
    now = [100.0]
    return Balancer(settings, clock=lambda: now[0], rng=random.Random(0)), RoutingTable(
        settings).resolve("m"), now


def _attempt(b: Balancer, pool: Pool, who: Caller, status: int) -> bool:
    """One request of `who`; False when the balancer kept it off the deployment."""
    member = b.sole_ready(pool, b.clock(), who)
    if member is None:
        return False
    lease = b.lease(member, _record(), b.clock(), who)
    lease.answered(status, {})
    lease.done()
    return True


def _record() -> RequestRecord:
    return RequestRecord("id", "POST")


A = Caller(None, client="client:a")
B = Caller(None, client="client:b")


def test_one_callers_500s_hold_it_off_while_others_successes_do_not_reset_it() -> None:
    b, pool, now = _balancer()
    assert _attempt(b, pool, A, 500)
    assert _attempt(b, pool, B, 200)  # proves the deployment works, not a's requests
    assert _attempt(b, pool, A, 500)
    assert not _attempt(b, pool, A, 200)  # a is held off
    assert _attempt(b, pool, B, 200)  # b is not
    (row,) = b.snapshot(pool.deployments)
    assert row["circuit"] == "closed" and row["callers_circuit_open"] == 1
    now[0] += 10
    assert _attempt(b, pool, A, 200)  # a's probe succeeds: its circuit goes
    assert not b.state.of(pool.deployments[0]).callers


def test_a_streak_of_two_callers_500s_opens_it_for_all() -> None:
    b, pool, _ = _balancer()
    assert _attempt(b, pool, A, 500)
    assert _attempt(b, pool, B, 500)
    assert not _attempt(b, pool, Caller(None, client="client:c"), 200)


def test_a_timeout_after_sending_is_the_callers_own_and_no_connection_is_everyones() -> None:
    b, pool, _ = _balancer()
    for _ in range(2):
        member = b.sole_ready(pool, b.clock(), A)
        assert member is not None
        lease = b.lease(member, _record(), b.clock(), A)
        lease.failed("upstream_timeout", own=True)
        lease.done()
    assert b.sole_ready(pool, b.clock(), A) is None
    assert b.sole_ready(pool, b.clock(), B) is not None
    for _ in range(2):
        member = b.sole_ready(pool, b.clock(), B)
        assert member is not None
        lease = b.lease(member, _record(), b.clock(), B)
        lease.failed("upstream_unreachable")
        lease.done()
    assert b.sole_ready(pool, b.clock(), Caller(None, client="client:c")) is None


def test_the_503_of_a_held_caller_says_whose_requests_are_paused() -> None:
    for who, says in ((A, "yours are paused (other callers' are served)"),
                      (Caller(None), "requests without a key are paused")):
        b, pool, _ = _balancer()
        assert _attempt(b, pool, who, 500) and _attempt(b, pool, who, 500)
        with pytest.raises(NoDeploymentAvailable) as caught:
            b.failover(pool, 0, caller=who).next_step()
        assert says in caught.value.message
        assert caught.value.headers()["retry-after"] == "10"


def test_a_callers_probe_left_unanswered_lets_its_next_request_probe() -> None:
    b, pool, now = _balancer()
    assert _attempt(b, pool, A, 500) and _attempt(b, pool, A, 500)
    now[0] += 10
    member = b.sole_ready(pool, b.clock(), A)
    assert member is not None
    probe = b.lease(member, _record(), b.clock(), A)
    assert b.sole_ready(pool, b.clock(), A) is None  # one probe at a time
    assert b.sole_ready(pool, b.clock(), B) is member  # b is not waiting for it
    probe.done()  # the client left before an answer
    assert _attempt(b, pool, A, 200)
    assert not b.state.of(member.settings).callers


def _in_flight(b: Balancer, pool: Pool, who: Caller) -> Any:
    member = b.sole_ready(pool, b.clock(), who)
    assert member is not None
    return b.lease(member, _record(), b.clock(), who)


@pytest.mark.parametrize("status", [500, 502])
def test_a_request_sent_before_the_circuit_opened_is_not_the_half_open_probes_verdict(
    status: int,
) -> None:
    b, pool, now = _balancer()
    stale = _in_flight(b, pool, A)  # sent while the circuit was closed; answers late
    for _ in range(2):
        lease = _in_flight(b, pool, B)
        lease.failed("upstream_unreachable")
        lease.done()
    now[0] += 10
    probe = _in_flight(b, pool, B)
    c = Caller(None, client="client:c")
    assert b.sole_ready(pool, b.clock(), c) is None  # one probe at a time
    stale.answered(status, {})
    stale.done()
    state = b.state.of(pool.deployments[0])
    # main: the stale 500 let a second probe out while b's was in flight; its 502 reopened it
    assert state.breaker.state == "half-open"
    assert b.sole_ready(pool, b.clock(), c) is None
    probe.answered(200, {})
    probe.done()
    assert b.sole_ready(pool, b.clock(), c) is not None


def test_a_callers_request_sent_before_its_circuit_opened_is_not_its_probes_verdict() -> None:
    b, pool, now = _balancer()
    stale = _in_flight(b, pool, A)
    assert _attempt(b, pool, A, 500) and _attempt(b, pool, A, 500)  # a's own circuit opens
    now[0] += 10
    probe = _in_flight(b, pool, A)
    stale.answered(500, {})  # main: taken for the probe's verdict, a's circuit reopened
    stale.done()
    assert b.sole_ready(pool, b.clock(), A) is None  # a's probe is still out
    probe.done()  # the probe's client left without a verdict: a's next request probes
    assert _attempt(b, pool, A, 200)
    assert not b.state.of(pool.deployments[0]).callers


@pytest.mark.parametrize("status", [400, 404])
def test_a_callers_probe_answered_400_or_404_does_not_close_its_circuit(status: int) -> None:
    b, pool, now = _balancer()
    assert _attempt(b, pool, A, 500) and _attempt(b, pool, A, 500)
    now[0] += 10
    assert _attempt(b, pool, A, status)  # a cheap bad request as the probe
    # main: its circuit closed, and a had a fresh streak of failures to spend
    assert _attempt(b, pool, A, 500)  # the next request probes, fails: reopened at once
    assert not _attempt(b, pool, A, 200)
    assert _attempt(b, pool, B, 200)


def test_health_says_when_requests_without_a_key_are_held_off() -> None:
    b, pool, now = _balancer()
    nobody = Caller(None)
    (row,) = b.snapshot(pool.deployments)
    assert row["circuit_without_key"] == "closed"
    assert _attempt(b, pool, nobody, 500) and _attempt(b, pool, nobody, 500)
    assert not _attempt(b, pool, nobody, 200)  # every request without a key is held off
    (row,) = b.snapshot(pool.deployments)
    # main: only "circuit": "closed" and a count, though no request of this gateway is served
    assert row["circuit"] == "closed" and row["circuit_without_key"] == "open"
    now[0] += 10
    assert _attempt(b, pool, nobody, 200)
    (row,) = b.snapshot(pool.deployments)
    assert row["circuit_without_key"] == "closed"


def test_a_new_caller_never_pushes_a_held_off_one_out_of_its_circuit() -> None:
    b, pool, _ = _balancer(threshold=1)
    for n in range(MAX_CALLERS):
        assert _attempt(b, pool, Caller(None, client=f"client:{n}"), 500)
    assert _attempt(b, pool, Caller(None, client="client:new"), 500)
    # main: the oldest held-off caller was pushed out, its circuit with it, and it was served
    assert not _attempt(b, pool, Caller(None, client="client:0"), 200)
    # every kept caller held off: the new one's failure counted as everyone's
    assert b.state.of(pool.deployments[0]).breaker.state == "open"


def test_a_teams_keys_are_one_caller_and_cannot_open_it_for_other_teams() -> None:
    b, pool, _ = _balancer()
    one, two, other = (
        Caller(None, key=VirtualKey(id=f"vk_{n}", name="n", secret_hash="h", prefix="p",
                                    team_id=team))
        for n, team in ((1, "t1"), (2, "t1"), (3, "t2"))
    )
    assert _attempt(b, pool, one, 500) and _attempt(b, pool, two, 500)  # one tenant, two keys
    # main: a "streak of two callers": the deployment's circuit opened for every team
    assert b.state.of(pool.deployments[0]).breaker.state == "closed"
    assert not _attempt(b, pool, one, 200) and not _attempt(b, pool, two, 200)
    assert _attempt(b, pool, other, 200)
