"""The usage ledger, end to end: the official `openai` SDK through the gateway to the
bundled emulator, and the records read back from the SQLite database."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.gateway.app import GatewayApp, create_app
from azure_openai_proxy.governance.model import Limits, UsageRecord
from azure_openai_proxy.governance.prices import PriceTable, token_counts
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from tests.e2e.conftest import CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.support import ServerThread, load_keys_now, serve, silent_wav
from tests.waiting import until


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Streams paced at 20 ms a token, so a client can leave in the middle of one."""
    from azure_openai_proxy.emulator import create_emulator_app

    with serve(lambda: create_emulator_app(emulator_config(token_ms=20))) as server:
        yield Emulator(server)


@pytest.fixture
def long_emulator() -> Iterator[Emulator]:
    """Streams of 200 tokens at 20 ms each (4 s): a client that leaves after three is gone
    long before the end, however loaded the machine (the default 16 tokens, 320 ms, could
    all be relayed into the socket's buffers, usage frame included, before a slow client
    thread closed: the record was then measured, not estimated)."""
    from azure_openai_proxy.emulator import create_emulator_app

    config = emulator_config(token_ms=20, completion_tokens=200)
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


def _start(settings: Settings) -> ServerThread:
    return ServerThread(lambda: create_app(settings)).start()


@pytest.fixture
def ledger_gateway(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(emulator: Emulator, **extra: Any) -> ServerThread:
        settings = gateway_settings(emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}",
                                    **extra)
        server = _start(settings)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _app(server: ServerThread) -> GatewayApp:
    assert isinstance(server.app, GatewayApp)
    return server.app


def records(server: ServerThread) -> list[UsageRecord]:
    """Every record, once the writer has written what was queued. A request's record is
    added as its handler ends, which can be just after the client read its last byte (a
    stream's): the requests still in the gateway's hands end first (bounded: a test may
    leave one hanging on purpose)."""
    app = _app(server)
    with contextlib.suppress(AssertionError):
        until(lambda: app.metrics.in_flight == 0, timeout=2.0)
    ledger = app.ledger
    assert ledger is not None
    assert ledger.flush()
    store = LedgerStore.open(ledger.database)
    try:
        return store.records()
    finally:
        store.close()


def sdk(server: ServerThread, key: str = CLIENT_KEY, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=retries,
                         timeout=30)


def test_a_non_streamed_call_costs_what_the_price_table_says(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    gateway = ledger_gateway(emulator)
    answer = sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "price me"}])
    assert answer.usage is not None
    [record] = records(gateway)
    assert (record.model, record.deployment, record.route, record.status) == (
        "gpt-4o", "gpt-4o", "chat/completions", 200)
    assert record.usage_source == "measured" and record.priced
    assert (record.prompt_tokens, record.completion_tokens) == (
        answer.usage.prompt_tokens, answer.usage.completion_tokens)
    # gpt-4o: $2.50 in, $10.00 out per 1M tokens (prices.yaml)
    expected = (answer.usage.prompt_tokens * 2.50 + answer.usage.completion_tokens * 10.00) / 1e6
    assert record.cost_usd == pytest.approx(expected, rel=1e-12)
    assert record.cost_usd > 0


def test_a_completed_stream_is_recorded_with_azures_usage(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    gateway = ledger_gateway(emulator)
    stream = sdk(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True})
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1
    [record] = records(gateway)
    assert record.stream and record.usage_source == "measured"
    assert (record.prompt_tokens, record.completion_tokens) == (
        usage[0].prompt_tokens, usage[0].completion_tokens)
    tokens = token_counts(usage[0].model_dump())
    assert record.cost_usd == PriceTable.shipped().cost(["gpt-4o-mini"], tokens)[0]


def test_a_stream_the_gateway_asked_usage_for_is_measured_too(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    """The client did not ask for usage; the gateway did, and hid the frame."""
    gateway = ledger_gateway(emulator)
    chunks = list(sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    [record] = records(gateway)
    assert record.usage_source == "measured" and record.completion_tokens > 0


def test_a_stream_the_client_abandons_is_recorded_with_a_flagged_estimate(
    long_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    gateway = ledger_gateway(long_emulator)
    stream = sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "tell me a long story"}],
        stream=True, max_tokens=400)
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()

    def recorded() -> list[UsageRecord]:
        return records(gateway)

    until(recorded, 10, "the abandoned stream was not recorded")
    [record] = recorded()
    assert record.stream and record.status == 499
    assert record.usage_source == "estimated"
    assert record.prompt_tokens > 0 and record.completion_tokens > 0
    assert record.completion_tokens < 400  # the relayed part, not the whole answer
    assert record.cost_usd > 0


# -- budgets: real virtual keys, made in the same database the gateway reads ------------


def _virtual_key(gateway: ServerThread, database: Path, name: str, *, team: str | None = None,
                 **limits: Any) -> tuple[str, str]:
    """A key made in the store (as the CLI and the admin API do); returns (id, secret)
    once the gateway's key directory has loaded it."""
    store = KeyStore.open(database)
    try:
        key, secret = store.create_key(name, team=team, limits=Limits(**limits), now=time.time())
    finally:
        store.close()
    load_keys_now(gateway)  # not the next poll's (up to 0.5 s a key)
    until(lambda: httpx.get(gateway.url + "/v1/models",
                            headers={"Authorization": f"Bearer {secret}"}).status_code == 200,
          timeout=10, message="the gateway never loaded the new key")
    return key.id, secret


def _team(database: Path, name: str, **limits: Any) -> str:
    store = KeyStore.open(database)
    try:
        return store.create_team(name, limits=Limits(**limits), now=time.time()).name
    finally:
        store.close()


# Every call costs more than a cent at these prices.
_DEAR = {"prices": {"gpt-4o": {"input": 1000.0, "output": 1000.0}}}


def test_a_spent_budget_stops_the_key_without_an_sdk_retry(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "a", budget_usd=0.01,
                                  budget_period="daily")
    client = sdk(gateway, secret, retries=3)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    # The record reaches the budget (the key's /v1/models calls above cost nothing).
    [first] = [r for r in records(gateway) if r.key_id == key_id and r.cost_usd > 0]
    assert first.cost_usd > 0.01
    served = len(emulator.requests())

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "y"}])
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert len(emulator.requests()) == served  # Azure never saw it
    refusals = [r for r in records(gateway) if r.status == 429]
    assert len(refusals) == 1  # max_retries=3, and the SDK did not retry


def test_a_team_budget_stops_every_key_of_the_team(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    database = tmp_path / "gw.db"
    team = _team(database, "x", budget_usd=0.01, budget_period="monthly")
    secrets = [_virtual_key(gateway, database, name, team=team)[1] for name in ("a", "b")]
    sdk(gateway, secrets[0]).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    records(gateway)
    for secret in secrets:
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(gateway, secret, retries=2).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "y"}])
        assert refused.value.code == "insufficient_quota"


def test_a_soft_budget_warns_and_serves(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    gateway = ledger_gateway(emulator, **_DEAR)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "a", soft_budget_usd=0.01,
                             budget_period="daily")
    client = sdk(gateway, secret)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    records(gateway)
    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "y"}])
    assert answer.status_code == 200
    assert answer.headers["x-aop-budget-warning"] == "key"


# -- nothing lost ----------------------------------------------------------------------


def _load(server: ServerThread, requests: int, threads: int = 4) -> int:
    """`requests` chat calls from `threads` threads; returns how many were answered."""
    answered = 0
    lock = threading.Lock()
    per_thread = requests // threads

    def work() -> None:
        nonlocal answered
        client = sdk(server)
        for _ in range(per_thread):
            client.chat.completions.create(model="gpt-4o",
                                           messages=[{"role": "user", "content": "load"}])
            with lock:
                answered += 1

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    return answered


@pytest.mark.parametrize("writer", ["journal", "thread"])
def test_a_locked_database_loses_no_record_and_fails_no_request(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
    writer: str,
) -> None:
    """Meanwhile the records wait outside the database: in the journal (the default
    writer's child could not write them) or in the thread writer's spool file."""
    from azure_openai_proxy.gateway.journalfiles import read_ack, segment_path, segments
    from azure_openai_proxy.gateway.ledgerjournal import JournalLedgerWriter

    gateway = ledger_gateway(emulator, ledger_writer=writer)
    ledger = _app(gateway).ledger
    assert ledger is not None
    assert isinstance(ledger, JournalLedgerWriter) == (writer == "journal")
    ledger.flush()
    lock = sqlite3.connect(tmp_path / "gw.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # every writer is refused until the commit
    try:
        answered = _load(gateway, 120)  # raises on any client error
        if isinstance(ledger, JournalLedgerWriter):
            until(lambda: ledger.failures > 0, 20, "the writer never hit the lock")
            assert not ledger.flush(0.2)  # appended, and not in the database
            assert sum(line.startswith(b"[") for number in segments(ledger.prefix) for line
                       in segment_path(ledger.prefix, number).read_bytes().split(b"\n")
                       ) == answered
        else:
            until(lambda: ledger.failures > 0 and ledger.flush(), 20,
                  "the writer never hit the lock")
            assert ledger.spool_path.exists()
    finally:
        lock.execute("COMMIT")
        lock.close()
    answered += _load(gateway, 40)
    until(lambda: len(records(gateway)) == answered, 20, "records missing after the database came back")
    assert len({r.request_id for r in records(gateway)}) == answered == 160
    assert not ledger.spool_path.exists()
    if isinstance(ledger, JournalLedgerWriter):
        last = segments(ledger.prefix)[-1]
        assert read_ack(ledger.prefix) == (last, segment_path(ledger.prefix, last).stat().st_size)


# -- usage queries ------------------------------------------------------------------------

ADMIN_KEY = "admin-key-for-tests-0123456789"


def _get(url: str, key: str | None) -> tuple[int, str, bytes]:
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.headers["content-type"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read()


def test_admin_usage_groups_the_ledger_as_json_and_csv(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    import json

    gateway = ledger_gateway(emulator, admin_key=ADMIN_KEY)
    client = sdk(gateway)
    for model in ("gpt-4o", "gpt-4o", "gpt-4o-mini"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "q"}])
    spent: dict[str | None, float] = {}
    for r in records(gateway):
        spent[r.model] = spent.get(r.model, 0.0) + r.cost_usd

    status, kind, body = _get(f"{gateway.url}/admin/usage?by=model&since=1h", ADMIN_KEY)
    assert (status, kind) == (200, "application/json")
    data = {row["model"]: row for row in json.loads(body)["data"]}
    assert {m: row["requests"] for m, row in data.items()} == {"gpt-4o": 2, "gpt-4o-mini": 1}
    assert data["gpt-4o"]["cost_usd"] == pytest.approx(spent["gpt-4o"], abs=1e-6)

    status, kind, body = _get(f"{gateway.url}/admin/usage?by=deployment&format=csv", ADMIN_KEY)
    assert status == 200 and kind.startswith("text/csv")
    lines = body.decode().splitlines()
    assert lines[0].startswith("deployment,requests,")
    assert sorted(line.split(",")[:2] for line in lines[1:]) == [["gpt-4o", "2"], ["gpt-4o-mini", "1"]]


@pytest.mark.parametrize(("key", "status", "code"), [
    (None, 401, b"invalid_api_key"), ("wrong", 401, b"invalid_api_key"),
    (CLIENT_KEY, 403, b"forbidden"),  # a valid key, for the models: as on /admin/keys
])
def test_admin_usage_needs_the_admin_key(
    key: str | None, status: int, code: bytes, emulator: Emulator,
    ledger_gateway: Callable[..., ServerThread],
) -> None:
    gateway = ledger_gateway(emulator, admin_key=ADMIN_KEY)
    got, _, body = _get(f"{gateway.url}/admin/usage", key)
    assert got == status and code in body and ADMIN_KEY.encode() not in body


def test_admin_usage_refuses_bad_parameters_and_is_off_without_an_admin_key(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], start_gateway: Any,
) -> None:
    gateway = ledger_gateway(emulator, admin_key=ADMIN_KEY)
    for query in ("by=owner", "format=xml", "since=yesterday"):
        status, kind, body = _get(f"{gateway.url}/admin/usage?{query}", ADMIN_KEY)
        assert (status, kind) == (400, "application/json"), query
        assert b'"invalid_request_error"' in body
    plain = start_gateway(gateway_settings(emulator.url))
    assert _get(f"{plain.url}/admin/usage", ADMIN_KEY)[0] == 404


def test_the_usage_command_reads_the_ledger(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from azure_openai_proxy.cli import main

    gateway = ledger_gateway(emulator)
    sdk(gateway).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    [record] = records(gateway)
    database = f"sqlite:///{tmp_path / 'gw.db'}"
    assert main(["usage", "--database", database, "--by", "model", "--json"], {}) == 0
    [row] = json.loads(capsys.readouterr().out)["data"]
    assert (row["model"], row["requests"]) == ("gpt-4o", 1)
    assert row["cost_usd"] == pytest.approx(record.cost_usd, abs=1e-6)
    assert main(["usage", "--database", database, "--by", "day", "--since", "2d"], {}) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["day", "requests"] and table[-1].split()[:2] == ["total", "1"]
    assert main(["usage", "--database", database, "--by", "key", "--csv"], {}) == 0
    # a static client key: no key id, no name
    assert capsys.readouterr().out.splitlines()[1].startswith(",,1,")
    assert main(["usage", "--database", database, "--since", "soon"], {}) == 2
    # as the README prints it: the database named by the config file
    config = tmp_path / "config.yaml"
    config.write_text(f"database: {database}\n")
    assert main(["usage", "-c", str(config), "--by", "key", "--since", "7d"], {}) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:2] == ["total", "1"]
    assert main(["usage", "-c", str(config), "--by", "model", "--since", "2026-12-01",
                 "--until", "2099-12-02", "--csv"], {}) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("gpt-4o,1,")


@pytest.mark.parametrize(("workers", "reload"), [("1", False), ("2", False), ("1", True)])
def test_sigterm_under_load_loses_no_record(tmp_path: Path, workers: str, reload: bool) -> None:
    """A gateway process stopped by SIGTERM while clients keep calling: every request it
    answered is in the ledger afterwards (the app's cleanup flushes the writer). With two
    workers, two writers share the database; `reload`: a SIGHUP under the load first
    (the writer flushed and its prices journalled between two records)."""
    import signal

    import httpx
    import yaml

    from tests.e2e.pools import pool_config, pool_emulator
    from tests.e2e.test_reload_shutdown import gateway_process

    config = tmp_path / "config.yaml"
    database = tmp_path / "gw.db"
    with pool_emulator(token_ms=2) as emulator:
        config.write_text(yaml.safe_dump({
            **pool_config(emulator.url, [("dep-a", {})]),
            "database": f"sqlite:///{database}", "log_level": "warning",
            "shutdown_grace_seconds": 10}))
        with gateway_process(config, "--workers", workers) as (process, client):
            answered = 0
            lock = threading.Lock()
            enough, reloaded = threading.Event(), threading.Event()

            def work() -> None:
                nonlocal answered
                with httpx.Client(timeout=30) as http:
                    for _ in range(2000):  # bounded; ends at the first refusal
                        try:
                            response = http.post(
                                f"http://127.0.0.1:{client.port}/v1/chat/completions",
                                headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                                json={"model": "gpt-4o", "max_tokens": 4,
                                      "messages": [{"role": "user", "content": "load"}]})
                        except httpx.HTTPError:
                            return
                        if response.status_code != 200:
                            return
                        with lock:
                            answered += 1
                            if answered >= 150:
                                enough.set()
                            if answered >= 300:
                                reloaded.set()

            workers = [threading.Thread(target=work) for _ in range(4)]
            for worker in workers:
                worker.start()
            assert enough.wait(60), "the load never reached 150 requests"
            if reload:
                process.signal(signal.SIGHUP)
                assert reloaded.wait(60), "the load stopped at the reload"
            process.signal(signal.SIGTERM)
            for worker in workers:
                worker.join(60)
            assert process.popen.wait(30) == 0, process.output()
    store = LedgerStore.open(database)
    try:
        served = [r for r in store.records() if r.status == 200]
    finally:
        store.close()
    assert answered >= 150
    assert len(served) == answered


def test_a_responses_stream_is_recorded_with_its_usage(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    """Responses streams are relayed unchanged; their usage is read on the way."""
    gateway = ledger_gateway(emulator)
    completed = [event for event in sdk(gateway).responses.create(
        model="gpt-4o", input="stream a response", stream=True)
        if event.type == "response.completed"]
    usage = completed[0].response.usage
    assert usage is not None
    [record] = records(gateway)
    assert record.route == "responses" and record.usage_source == "measured"
    assert (record.prompt_tokens, record.completion_tokens) == (usage.input_tokens, usage.output_tokens)
    assert record.cost_usd > 0


def test_an_abandoned_responses_stream_is_estimated(
    long_emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:
    gateway = ledger_gateway(long_emulator)
    stream = sdk(gateway).responses.create(model="gpt-4o", input="tell me a long story",
                                           stream=True, max_output_tokens=400)
    seen = 0
    for event in stream:
        seen += event.type == "response.output_text.delta"
        if seen == 3:
            break
    stream.close()
    until(lambda: records(gateway), 10, "the abandoned stream was not recorded")
    [record] = records(gateway)
    assert record.usage_source == "estimated" and record.status == 499
    assert record.prompt_tokens > 0 and record.completion_tokens > 0


def test_a_reload_flushes_the_ledger_and_prices_later_records_with_the_new_prices(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    gateway = ledger_gateway(emulator)
    client = sdk(gateway)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    assert records(gateway)[0].cost_usd < 0.01
    new = gateway_settings(emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}", **_DEAR)

    async def swap() -> None:
        _app(gateway).reload(new)

    gateway.call(swap)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    later = records(gateway)[1]
    assert later.cost_usd == pytest.approx(
        (later.prompt_tokens + later.completion_tokens) * 1000.0 / 1e6)


def test_admin_usage_answers_503_when_the_database_cannot_be_read(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread], tmp_path: Path,
) -> None:
    (tmp_path / "gw.db").mkdir()  # where the database should be: nothing can open it
    gateway = start_gateway(gateway_settings(
        emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}", admin_key=ADMIN_KEY))
    status, kind, body = _get(f"{gateway.url}/admin/usage", ADMIN_KEY)
    assert (status, kind) == (503, "application/json") and b"database_unavailable" in body
    # and the proxied requests do not notice
    assert sdk(gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "q"}]).choices


# -- budgets hold what is in flight and not yet written (review of issue 13, finding 1) ---


def _chat(gateway: ServerThread, secret: str, text: str = "x") -> int:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
                      ).status_code


def test_a_budget_stops_quick_sequential_requests_before_the_ledger_writes_them(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    """Each call costs more than the whole budget: the second is refused at once, not
    after the writer's next batch."""
    gateway = ledger_gateway(emulator, **_DEAR)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "a", budget_usd=0.01,
                                  budget_period="daily")
    statuses = [_chat(gateway, secret) for _ in range(10)]
    assert statuses == [200] + [429] * 9
    spent = [r.cost_usd for r in records(gateway) if r.key_id == key_id and r.cost_usd > 0]
    assert len(spent) == 1


def test_a_budget_admits_one_of_many_concurrent_requests(
    slow_emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
) -> None:
    """Concurrent requests: the first holds its estimated cost, which already reaches the
    budget, so the others are refused while it is in flight."""
    gateway = ledger_gateway(slow_emulator, **_DEAR)
    _, secret = _virtual_key(gateway, tmp_path / "gw.db", "a", budget_usd=0.01,
                             budget_period="daily")
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(_chat(gateway, secret)))
               for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200] + [429] * 9


# -- a client that leaves before the first byte (finding 3) -------------------------------


@pytest.fixture
def late_emulator() -> Iterator[Emulator]:
    """Azure's first byte comes 600 ms after the request: a client can leave before it."""
    from azure_openai_proxy.emulator import create_emulator_app

    with serve(lambda: create_emulator_app(emulator_config(ttft_ms=600))) as server:
        yield Emulator(server)


def _leave_once_azure_has_it(gateway: ServerThread, emulator: Emulator, secret: str,
                             body: dict[str, Any]) -> None:
    """Send `body` on a raw connection and close it as soon as Azure has the request."""
    import json
    import socket

    seen = len(emulator.requests())
    host, port = gateway.url.split("//")[1].split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + secret.encode() + b"\r\nContent-Type: application/json\r\n"
                     + b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        until(lambda: len(emulator.requests()) > seen, 10, "Azure never got the request")


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_before_the_first_byte_is_recorded_with_an_estimate(
    late_emulator: Emulator, ledger_gateway: Callable[..., ServerThread], tmp_path: Path,
    stream: bool,
) -> None:
    gateway = ledger_gateway(late_emulator)
    key_id, secret = _virtual_key(gateway, tmp_path / "gw.db", "a", tpm=100_000)
    prompt = "a long prompt " * 200  # 2,800 characters: about 700 tokens
    _leave_once_azure_has_it(gateway, late_emulator, secret, {
        "model": "gpt-4o", "messages": [{"role": "user", "content": prompt}],
        "stream": stream, "max_tokens": 50})

    def left() -> list[UsageRecord]:
        return [r for r in records(gateway)
                if r.key_id == key_id and r.route == "chat/completions"]

    until(left, 10, "the request was not recorded")
    [record] = left()
    assert record.status == 499 and record.usage_source == "estimated"
    assert record.prompt_tokens >= 700
    # A non-streamed call is finished and billed by Azure: its max_tokens count too.
    assert record.completion_tokens == (0 if stream else 50)
    assert record.cost_usd > 0


# -- routes billed by units: images, audio minutes, speech characters (finding 4) --------


def test_images_audio_and_speech_are_priced_by_their_units_or_marked_unpriced(
    emulator: Emulator, ledger_gateway: Callable[..., ServerThread],
) -> None:

    gateway = ledger_gateway(emulator)
    client = sdk(gateway)
    client.images.generate(model="dall-e-3", prompt="a lighthouse", n=1,
                           response_format="b64_json")
    client.images.generate(model="dall-e-3", prompt="a lighthouse", quality="hd",
                           response_format="b64_json")
    client.audio.speech.create(model="tts", voice="alloy", input="Hello there, world.")
    audio = silent_wav(2)
    verbose = client.audio.transcriptions.create(model="whisper", file=("a.wav", audio),
                                                 response_format="verbose_json")
    client.audio.transcriptions.create(model="whisper", file=("a.wav", audio),
                                       response_format="text")
    standard, hd, speech, timed, plain = records(gateway)
    assert (standard.route, standard.priced, standard.cost_usd) == (
        "images/generations", True, pytest.approx(0.04))  # prices.yaml: dall-e-3 per_image
    assert (hd.priced, hd.cost_usd) == (False, 0.0)  # no price for hd: not guessed
    assert (speech.route, speech.priced) == ("audio/speech", True)
    assert speech.cost_usd == pytest.approx(len("Hello there, world.") * 15.00 / 1e6)
    assert timed.priced and timed.cost_usd == pytest.approx(verbose.duration / 60 * 0.006)
    assert (plain.priced, plain.cost_usd) == (False, 0.0)  # no duration in a text answer
