"""The Realtime API end to end: the official `openai` SDK's realtime client (and a plain
`websockets` client, for what the SDK does not let a test do) through the gateway to the
emulator's realtime endpoint, on both Azure API families."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AzureOpenAI, OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from azure_openai_proxy.emulator import EmulatedDeployment, create_emulator_app, mask_secret
from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.store.ledger import LedgerStore
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.e2e.pools import MODEL, pool_emulator, pool_gateway, pool_settings
from tests.e2e.test_entra import FakeCredential
from tests.processes import pproxy, running
from tests.support import ServerThread, load_keys_now, serve
from tests.waiting import until

DATED = "gpt-4o-realtime-preview"  # an emulator deployment, reached on the dated API
V1 = "gpt-realtime"  # reached on the v1 API
HELLO = {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Say hello"}]}
TEXT_DELTAS = ("response.text.delta", "response.output_text.delta")


def realtime_settings(endpoint: str, **extra: Any) -> Settings:
    deployments = [
        {"model_name": DATED, "deployment_name": DATED, "endpoint": endpoint,
         "api_key": AZURE_KEY, "api_version": "2024-10-21"},  # GA: realtime gets a preview
        {"model_name": V1, "deployment_name": V1, "endpoint": endpoint, "api_key": AZURE_KEY,
         "api": "v1"},
        {"model_name": "gpt-4o", "deployment_name": "gpt-4o", "endpoint": endpoint,
         "api_key": AZURE_KEY},
    ]
    return gateway_settings(endpoint, deployment_config=deployments, **extra)


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """Responses paced at 20 ms a token, so a client can leave in the middle of one."""
    with serve(lambda: create_emulator_app(emulator_config(token_ms=20))) as server:
        yield Emulator(server)


@pytest.fixture
def gateway(emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_gateway(realtime_settings(emulator.url))


def ws_url(server: ServerThread, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def text_turn(connection: Any) -> tuple[str, Any]:
    """One text turn on an SDK connection: the text and the `response.done` event."""
    connection.conversation.item.create(item=HELLO)
    connection.response.create()
    text = []
    for event in connection:
        assert event.type != "error", event
        if event.type in TEXT_DELTAS:
            text.append(event.delta)
        if event.type == "response.done":
            return "".join(text), event
    raise AssertionError("the session ended before response.done")


def realtime_entries(emulator: Emulator) -> list[dict[str, Any]]:
    return [e for e in emulator.requests() if e["path"].endswith("/realtime")]


def assert_server_key_only(entry: dict[str, Any]) -> None:
    assert entry["headers"]["api-key"] == mask_secret(AZURE_KEY)
    assert "authorization" not in entry["headers"]
    shown = json.dumps(entry)
    assert CLIENT_KEY not in shown and mask_secret(CLIENT_KEY) not in shown


@pytest.mark.parametrize("model, path, query", [
    (DATED, "/openai/realtime", {"api-version": ["2025-04-01-preview"], "deployment": [DATED]}),
    (V1, "/openai/v1/realtime", {"model": [V1]}),
])
def test_the_sdk_completes_a_text_turn_on_both_families(
    emulator: Emulator, gateway: ServerThread, model: str, path: str, query: dict[str, Any],
) -> None:
    client = OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    with client.realtime.connect(model=model) as connection:
        connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        text, done = text_turn(connection)
    assert text and done.response.usage.output_tokens == len(text.split()) + text.count(".")
    until(lambda: "closed_at" in realtime_entries(emulator)[0])
    [entry] = realtime_entries(emulator)
    assert (entry["path"], entry["query_params"], entry["status"]) == (path, query, 101)
    assert_server_key_only(entry)


def test_an_azure_client_on_the_native_path_keeps_its_api_version(
    emulator: Emulator, gateway: ServerThread,
) -> None:
    client = AzureOpenAI(api_key=CLIENT_KEY, api_version="2024-10-01-preview",
                         azure_endpoint=gateway.url,
                         websocket_base_url=ws_url(gateway, "/openai"), max_retries=0)
    with client.beta.realtime.connect(model=DATED) as connection:
        connection.session.update(session={"modalities": ["text"]})
        text, _ = text_turn(connection)
    assert text
    [entry] = realtime_entries(emulator)
    assert entry["query_params"]["api-version"] == ["2024-10-01-preview"]
    assert_server_key_only(entry)


def test_audio_deltas_come_through_as_base64_pcm(gateway: ServerThread) -> None:
    # (The beta client always says wss:// unless given its WebSocket base URL.)
    client = OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0,
                    websocket_base_url=ws_url(gateway, "/v1"))
    with client.beta.realtime.connect(model=DATED) as connection:
        connection.session.update(session={"modalities": ["text", "audio"]})
        connection.response.create()
        audio = b""
        for event in connection:
            if event.type == "response.audio.delta":
                audio += base64.b64decode(event.delta)
            if event.type == "response.done":
                break
    assert audio and len(audio) % 2 == 0
    assert event.response.usage.output_token_details.audio_tokens > 0


def open_raw(gateway: ServerThread, key: str = CLIENT_KEY, model: str = DATED,
             **options: Any) -> ClientConnection:
    return connect(ws_url(gateway, f"/v1/realtime?model={model}"),
                   additional_headers={"Authorization": f"Bearer {key}"}, **options)


def events_until(connection: ClientConnection, kind: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        event = json.loads(connection.recv(timeout=10))
        seen.append(event)
        if event["type"] == kind:
            return seen


def test_a_client_that_leaves_closes_the_upstream_within_100_ms(
    slow_emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    gateway = start_gateway(realtime_settings(slow_emulator.url))
    with open_raw(gateway) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create"}))
        events_until(connection, "response.created")  # mid-response: 16 tokens at 20 ms
        left = time.monotonic()
        connection.socket.close()  # no closing handshake: the client is simply gone
    until(lambda: "closed_at" in realtime_entries(slow_emulator)[0],
          message="the upstream session never ended")
    # The one timed assertion the issue asks for.
    assert realtime_entries(slow_emulator)[0]["closed_at"] - left < 0.1


def test_close_codes_and_reasons_pass_through(emulator: Emulator, gateway: ServerThread) -> None:
    with open_raw(gateway) as connection:
        events_until(connection, "session.created")
        connection.close(4001, "done here")
    until(lambda: "closed_at" in realtime_entries(emulator)[0])
    assert realtime_entries(emulator)[0]["close_code"] == 4001


def test_an_upstream_drop_is_an_error_event_then_a_close(
    emulator: Emulator, gateway: ServerThread,
) -> None:
    emulator.fault(DATED, "cut", after_frames=3)
    with open_raw(gateway) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "response.create"}))
        events = events_until(connection, "error")
        assert [e["type"] for e in events[:3]] == [
            "response.created", "response.output_item.added", "response.content_part.added"]
        assert events[-1]["error"]["code"] == "upstream_disconnected"
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def test_bad_events_get_error_events_and_the_session_goes_on(gateway: ServerThread) -> None:
    with open_raw(gateway) as connection:
        events_until(connection, "session.created")
        connection.send("not json")
        [bad] = events_until(connection, "error")
        connection.send(json.dumps({"type": "no.such.event"}))
        [unknown] = events_until(connection, "error")
        connection.send(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
        [updated] = events_until(connection, "session.updated")
    assert bad["error"]["code"] == "invalid_json"
    assert (unknown["error"]["code"], unknown["error"]["param"]) == ("invalid_value", "type")
    assert updated["session"]["instructions"] == "x"


def refusal(gateway: ServerThread, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gateway, path), additional_headers=headers)
    response = refused.value.response
    return response.status_code, json.loads(bytes(response.body or b""))


def test_a_wrong_key_is_a_401_before_the_upgrade(emulator: Emulator, gateway: ServerThread) -> None:
    status, body = refusal(gateway, f"/v1/realtime?model={DATED}",
                           {"Authorization": "Bearer wrong"})
    assert status == 401 and body["error"]["type"] == "invalid_request_error"
    status, body = refusal(gateway, f"/v1/realtime?model={DATED}", {})
    assert status == 401
    assert realtime_entries(emulator) == []  # Azure never saw either


def test_unknown_models_and_missing_models_are_refused_before_the_upgrade(
    gateway: ServerThread,
) -> None:
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    status, body = refusal(gateway, "/v1/realtime?model=no-such-model", auth)
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    status, body = refusal(gateway, "/v1/realtime", auth)
    assert (status, body["error"]["param"]) == (400, "model")


def test_a_bad_handshake_is_refused_before_azure_is_called(
    emulator: Emulator, gateway: ServerThread,
) -> None:
    # A valid key but no Sec-WebSocket-Key: the engine's handshake would fail after the
    # upstream session was opened, leaving it (and its balancer lease) behind.
    head, body = raw_handshake(gateway, "HTTP/1.1", "")
    assert head.startswith(b"HTTP/1.1 400")
    assert "Sec-WebSocket-Key" in json.loads(body)["error"]["message"]
    assert realtime_entries(emulator) == []


def test_an_http10_handshake_is_a_400_before_azure_is_called(
    emulator: Emulator, gateway: ServerThread,
) -> None:
    # A WebSocket's handshake is HTTP/1.1 (RFC 6455 4.1); an HTTP/1.0 request's Upgrade
    # is ignored (RFC 9110 7.8). It was taken: a 101, and Azure's session opened.
    head, body = raw_handshake(gateway, "HTTP/1.0", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert "HTTP/1.1" in json.loads(body)["error"]["message"]
    assert realtime_entries(emulator) == []


def raw_handshake(gateway: ServerThread, version: str, lines: str) -> tuple[bytes, bytes]:
    """The head and body of the answer to a realtime handshake sent by hand (with the
    client's key and header `lines`)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        raw.sendall(f"GET /v1/realtime?model={DATED} {version}\r\nHost: x\r\n"
                    f"Upgrade: websocket\r\nConnection: Upgrade\r\n{lines}"
                    f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = raw.recv(65536)  # (a 101 is followed by `session.created`)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_azures_refusal_at_open_is_an_http_answer(
    emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
) -> None:
    deployments = [{"model_name": "wrong-key", "deployment_name": DATED,
                    "endpoint": emulator.url, "api_key": "not-the-azure-key"},
                   {"model_name": DATED, "deployment_name": DATED, "endpoint": emulator.url,
                    "api_key": AZURE_KEY}]
    gateway = start_gateway(gateway_settings(emulator.url, deployment_config=deployments))
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    # Azure's 401 to the gateway's own key: the operator's problem, as on HTTP routes.
    status, body = refusal(gateway, "/v1/realtime?model=wrong-key", auth)
    assert (status, body["error"]["code"]) == (502, "upstream_authentication_failed")
    # A 429 longer than the gateway waits: its answer, with its retry-after.
    emulator.fault(DATED, "429", retry_after=600, count=3)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(gateway, f"/v1/realtime?model={DATED}"), additional_headers=auth)
    response = refused.value.response
    assert response.status_code == 429 and response.headers["retry-after"] == "600"
    assert json.loads(bytes(response.body or b""))["error"]["code"] == "rate_limit_exceeded"


def test_a_browser_may_send_its_key_as_a_subprotocol(emulator: Emulator,
                                                     gateway: ServerThread) -> None:
    with connect(ws_url(gateway, f"/v1/realtime?model={DATED}"),
                 subprotocols=[Subprotocol("realtime"),
                               Subprotocol(f"openai-insecure-api-key.{CLIENT_KEY}"),
                               Subprotocol("openai-beta.realtime-v1")],
                 ) as connection:
        assert connection.subprotocol == "realtime"
        events_until(connection, "session.created")
    [entry] = realtime_entries(emulator)
    assert_server_key_only(entry)  # the key subprotocol never reaches Azure
    # The others do, in the client's order; `openai-beta.X` is also the header it means.
    assert entry["headers"]["sec-websocket-protocol"] == "realtime, openai-beta.realtime-v1"
    assert entry["headers"]["openai-beta"] == "realtime-v1"


def subprotocol_upstream() -> web.Application:
    """An upstream that speaks only the `custom.v2` subprotocol."""
    async def realtime(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("custom.v2",))
        await socket.prepare(request)
        await socket.send_str('{"type":"session.created"}')
        async for _ in socket:
            pass
        return socket

    app = web.Application()
    app.router.add_get("/openai/v1/realtime", realtime)
    return app


@pytest.mark.parametrize("offered, chosen", [
    (["realtime", "custom.v2"], "custom.v2"),  # Azure's choice, not the gateway's
    # Azure chose none: `realtime` when offered (a browser that offered subprotocols
    # fails a handshake answered with none), else none.
    (["realtime", "openai-beta.realtime-v1"], "realtime"),
    (["openai-beta.realtime-v1"], None),
])
def test_the_client_gets_the_subprotocol_azure_accepted(
    start_gateway: Callable[[Settings], ServerThread], offered: list[str],
    chosen: str | None,
) -> None:
    with serve(subprotocol_upstream) as upstream:
        gateway = start_gateway(gateway_settings(upstream.url, deployment_config=[
            {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
             "api_key": AZURE_KEY, "api": "v1"}]))
        with open_raw(gateway, model=V1,
                      subprotocols=[Subprotocol(p) for p in offered]) as connection:
            assert connection.subprotocol == chosen
            events_until(connection, "session.created")


# -- virtual keys: the allow-list, RPM per session, and the ledger ------------------------


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_gateway(realtime_settings(
        emulator.url, database=f"sqlite:///{tmp_path / 'gw.db'}"))


def virtual_key(gateway: ServerThread, database: Path, **limits: Any) -> tuple[str, str]:
    store = KeyStore.open(database)
    try:
        models = limits.pop("models", ())
        key, secret = store.create_key("rt", models=models, limits=Limits(**limits),
                                       now=time.time())
    finally:
        store.close()
    load_keys_now(gateway)  # not the next poll's (up to 0.5 s a key)
    until(lambda: _loaded(gateway, secret), message="the gateway never loaded the new key")
    return key.id, secret


def _loaded(gateway: ServerThread, secret: str) -> bool:
    """Asked of the key directory, not with a request: /v1/models counts against RPM."""
    async def ask() -> bool:
        app = gateway.app
        assert isinstance(app, GatewayApp) and app.gateway.directory is not None
        try:
            app.gateway.directory.authenticate(secret)
        except AuthenticationFailed:
            return False
        return True

    return bool(gateway.call(ask))


def test_a_virtual_key_may_only_open_the_models_it_allows(
    emulator: Emulator, governed: ServerThread, tmp_path: Path,
) -> None:
    _, secret = virtual_key(governed, tmp_path / "gw.db", models=(V1,))
    status, body = refusal(governed, f"/v1/realtime?model={DATED}",
                           {"Authorization": f"Bearer {secret}"})
    assert (status, body["error"]["code"]) == (404, "model_not_found")
    assert realtime_entries(emulator) == []
    with open_raw(governed, secret, V1) as connection:
        events_until(connection, "session.created")


def test_a_session_counts_one_request_of_the_keys_rpm(governed: ServerThread,
                                                      tmp_path: Path) -> None:
    _, secret = virtual_key(governed, tmp_path / "gw.db", rpm=2)
    # The key's loading check asks the key directory, not a request: each session counts.
    with open_raw(governed, secret) as connection:
        events_until(connection, "session.created")
    with open_raw(governed, secret) as connection:
        events_until(connection, "session.created")
    status, body = refusal(governed, f"/v1/realtime?model={DATED}",
                           {"Authorization": f"Bearer {secret}"})
    assert status == 429 and "requests per minute" in body["error"]["message"]


def test_each_response_is_one_ledger_record_with_its_usage(
    emulator: Emulator, governed: ServerThread, tmp_path: Path,
) -> None:
    key_id, secret = virtual_key(governed, tmp_path / "gw.db")
    client = OpenAI(base_url=governed.url + "/v1", api_key=secret, max_retries=0)
    usages = []
    with client.realtime.connect(model=V1) as connection:
        connection.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        for _ in range(2):
            usages.append(text_turn(connection)[1].response.usage)
    app = governed.app
    assert isinstance(app, GatewayApp) and app.ledger is not None
    assert app.ledger.flush()
    store = LedgerStore.open(app.ledger.database)
    try:
        recorded = [r for r in store.records() if r.route == "realtime"]
    finally:
        store.close()
    assert [(r.key_id, r.model, r.deployment, r.status) for r in recorded] == [
        (key_id, V1, V1, 200)] * 2
    assert sorted((r.prompt_tokens, r.completion_tokens) for r in recorded) == sorted(
        (u.input_tokens, u.output_tokens) for u in usages)


@pytest.mark.parametrize("scheme", ["socks5", "http"])
def test_the_upstream_socket_goes_through_the_configured_proxy(
    scheme: str, emulator: Emulator, start_gateway: Callable[[Settings], ServerThread],
    reserve_port: Callable[[], int],
) -> None:
    port = reserve_port()
    key = "socks_proxy" if scheme == "socks5" else "http_proxy"
    gateway = start_gateway(realtime_settings(
        emulator.url, upstream={key: f"{scheme}://127.0.0.1:{port}"}))
    with running(pproxy(f"{scheme}://127.0.0.1:{port}"), port=port) as proxy:
        with open_raw(gateway) as connection:
            events_until(connection, "session.created")
        assert f"-> 127.0.0.1:{emulator.server.port}" in proxy.output()
    # With the proxy gone, Azure cannot be reached: the gateway really depended on it.
    status, body = refusal(gateway, f"/v1/realtime?model={DATED}",
                           {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert (status, body["error"]["code"]) == (502, "upstream_unreachable")


# -- pools and Entra ID --------------------------------------------------------------------


def realtime_pool_emulator(**config: Any) -> Any:
    return pool_emulator(*(EmulatedDeployment(name, "gpt-4o-realtime-preview-2024-12-17",
                                              "realtime") for name in ("rt-a", "rt-b")), **config)


def test_a_pool_opens_on_another_deployment_when_azure_answers_429() -> None:
    with realtime_pool_emulator() as emulator:
        emulator.fault("rt-a", "429", retry_after=600)
        settings = pool_settings(emulator.url, [("rt-a", {"priority": 1}), ("rt-b", {"priority": 2})])
        with pool_gateway(settings) as gateway, open_raw(gateway, model=MODEL) as connection:
            events_until(connection, "session.created")
        assert [(e["deployment"], e["status"]) for e in realtime_entries(emulator)] == [
            ("rt-a", 429), ("rt-b", 101)]


def test_an_entra_token_reaches_azure_as_bearer_and_no_api_key() -> None:
    with realtime_pool_emulator(entra_tokens=("the-token",)) as emulator:
        settings = pool_settings(emulator.url, [("rt-a", {"auth": "entra", "api_key": None})])
        with pool_gateway(settings, credential=FakeCredential("the-token")) as gateway, \
                open_raw(gateway, model=MODEL) as connection:
            events_until(connection, "session.created")
        [entry] = realtime_entries(emulator)
        assert entry["headers"]["authorization"] == mask_secret("Bearer the-token")
        assert "api-key" not in entry["headers"]


Reply = Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]]


def fake_azure(reply: Reply, ended: Callable[[web.WebSocketResponse], None] | None = None,
               ) -> Callable[[], web.Application]:
    """Azure's v1 realtime endpoint as far as a test needs: `session.created`, then
    `reply` to each client event; `ended` is told when the client's side ends."""
    def factory() -> web.Application:
        async def realtime(request: web.Request) -> web.WebSocketResponse:
            socket = web.WebSocketResponse()
            await socket.prepare(request)
            await socket.send_str('{"type":"session.created"}')
            async for message in socket:
                await reply(socket, json.loads(message.data))
            if ended is not None:
                ended(socket)
            return socket

        app = web.Application()
        app.router.add_get("/openai/v1/realtime", realtime)
        return app

    return factory


async def _close_when_told(socket: web.WebSocketResponse, event: dict[str, Any]) -> None:
    if event.get("type") == "close-me":
        await socket.close(code=4002, message=b"going")


closing_upstream = fake_azure(_close_when_told)  # closes with 4002 "going" when told to


def test_azures_close_code_and_reason_reach_the_client(
    start_gateway: Callable[[Settings], ServerThread],
) -> None:
    with serve(closing_upstream) as upstream:
        gateway = start_gateway(gateway_settings(upstream.url, deployment_config=[
            {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
             "api_key": AZURE_KEY, "api": "v1"}]))
        with open_raw(gateway, model=V1) as connection:
            events_until(connection, "session.created")
            connection.send('{"type":"close-me"}')
            with pytest.raises(ConnectionClosed) as closed:
                connection.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "going")


@pytest.mark.parametrize("path", [f"/v1/realtime?model={DATED}",
                                  f"/openai/realtime?api-version=2025-04-01-preview&deployment={DATED}",
                                  f"/openai/v1/realtime?model={V1}"])
def test_a_plain_get_of_a_realtime_url_is_426_upgrade_required(
    emulator: Emulator, gateway: ServerThread, path: str,
) -> None:
    request = urllib.request.Request(gateway.url + path,
                                     headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    answer = refused.value
    assert answer.code == 426 and answer.headers["upgrade"] == "websocket"
    error = json.loads(answer.read())["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "upgrade_required")
    assert "Upgrade: websocket" in error["message"]
    assert realtime_entries(emulator) == []


def test_metrics_count_sessions_by_outcome_and_events_by_direction(
    gateway: ServerThread,
) -> None:
    from tests.e2e.test_metrics import scrape, value

    p = "azure_openai_proxy_realtime_"
    refusal(gateway, f"/v1/realtime?model={DATED}", {"Authorization": "Bearer wrong"})
    with open_raw(gateway) as connection:
        events_until(connection, "session.created")
        connection.send(json.dumps({"type": "conversation.item.create", "item": HELLO}))
        connection.send(json.dumps({"type": "response.create"}))
        received = 1 + len(events_until(connection, "response.done"))
        during = scrape(gateway.url)
    assert value(during, p + "sessions_open") == 1
    assert value(during, p + "sessions_total", outcome="opened", status="101") == 1
    assert value(during, p + "sessions_total", outcome="refused", status="401") == 1
    assert value(during, p + "events_total", direction="to_azure") == 2
    assert value(during, p + "events_total", direction="to_client") == received
    until(lambda: value(scrape(gateway.url), p + "sessions_open") == 0,
          message="the session never counted as closed")


def test_a_client_that_leaves_while_azure_is_being_connected_cancels_the_connect(
    start_gateway: Callable[[Settings], ServerThread],
) -> None:
    from tests.e2e.test_metrics import scrape, value
    from tests.support import bound_socket

    silent = bound_socket()  # listens, never accepts: the handshake never gets an answer
    silent.listen(8)
    with silent:
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        gateway = start_gateway(gateway_settings(endpoint, upstream={"connect_timeout": 120},
                                                 deployment_config=[
            {"model_name": V1, "deployment_name": V1, "endpoint": endpoint,
             "api_key": AZURE_KEY, "api": "v1"}]))

        def connecting() -> float:
            return value(scrape(gateway.url), "azure_openai_proxy_deployment_in_flight",
                         deployment=V1)

        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
            raw.sendall(f"GET /v1/realtime?model={V1} HTTP/1.1\r\nHost: x\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n"
                        f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode())
            until(lambda: connecting() == 1, message="the gateway never began the connect")
        # The client is gone: the connect (120 s of patience) is cancelled at once.
        until(lambda: connecting() == 0, message="the upstream connect outlived its client")
        upstream, _ = silent.accept()
        with upstream:
            upstream.settimeout(10)
            while upstream.recv(65536):
                pass  # the upgrade request, then the gateway's end of the connection


def test_azures_redirect_is_not_followed_with_the_key(
    start_gateway: Callable[[Settings], ServerThread],
) -> None:
    seen: list[str] = []

    def elsewhere() -> web.Application:
        async def anything(request: web.Request) -> web.Response:
            seen.append(request.headers.get("api-key", ""))
            return web.Response(status=404)

        app = web.Application()
        app.router.add_get("/{tail:.*}", anything)
        return app

    with serve(elsewhere) as other:
        def redirecting() -> web.Application:
            async def realtime(request: web.Request) -> web.Response:
                raise web.HTTPFound(other.url.replace("http://", "ws://") + "/openai/v1/realtime")

            app = web.Application()
            app.router.add_get("/openai/v1/realtime", realtime)
            return app

        with serve(redirecting) as upstream:
            gateway = start_gateway(gateway_settings(upstream.url, deployment_config=[
                {"model_name": V1, "deployment_name": V1, "endpoint": upstream.url,
                 "api_key": AZURE_KEY, "api": "v1"}]))
            status, body = refusal(gateway, f"/v1/realtime?model={V1}",
                                   {"Authorization": f"Bearer {CLIENT_KEY}"})
    assert (status, body["error"]["code"]) == (502, "upstream_error")
    assert seen == []  # the other origin never saw a request, let alone the key
