"""The emulator's realtime WebSocket over loopback: what Azure refuses before the
handshake, the request log, and the `cut` fault."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from azure_openai_proxy.emulator import mask_secret
from tests.emulator.conftest import ENTRA, KEY, PREVIEW, add_fault, admin_requests, call
from tests.support import ServerThread

DATED = f"/openai/realtime?api-version={PREVIEW}&deployment=gpt-4o-realtime-preview"
V1 = "/openai/v1/realtime?model=gpt-realtime"


def ws(srv: ServerThread, path: str, headers: dict[str, str] | None = None) -> ClientConnection:
    return connect(srv.url.replace("http://", "ws://") + path,
                   additional_headers={"api-key": KEY} if headers is None else headers)


def refused(srv: ServerThread, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    with pytest.raises(InvalidStatus) as caught:
        ws(srv, path, headers)
    response = caught.value.response
    return response.status_code, json.loads(bytes(response.body or b""))


@pytest.mark.parametrize("path, headers", [
    (DATED, {"api-key": KEY}), (V1, {"api-key": KEY}), (V1, {"Authorization": f"Bearer {KEY}"}),
    (DATED, {"Authorization": f"Bearer {ENTRA}"}),
])
def test_both_families_open_with_a_key_or_a_token(srv: ServerThread, path: str,
                                                  headers: dict[str, str]) -> None:
    with ws(srv, path, headers) as connection:
        assert json.loads(connection.recv(timeout=10))["type"] == "session.created"


@pytest.mark.parametrize("path, headers, status, code", [
    (DATED, {"api-key": "wrong"}, 401, "401"),
    (DATED.replace(PREVIEW, "2024-10-21"), None, 404, "404"),  # GA versions have no realtime
    (DATED.replace(PREVIEW, "2024-08-01-preview"), None, 404, "404"),
    ("/openai/realtime?api-version=" + PREVIEW, None, 400, "missing_required_parameter"),
    ("/openai/v1/realtime", None, 400, "missing_required_parameter"),
    ("/openai/v1/realtime?model=nope", None, 404, "DeploymentNotFound"),
    ("/openai/v1/realtime?model=gpt-4o", None, 400, "OperationNotSupported"),
])
def test_refusals_come_before_the_handshake(srv: ServerThread, path: str,
                                            headers: dict[str, str] | None, status: int,
                                            code: str) -> None:
    got, body = refused(srv, path, headers)
    assert (got, body["error"]["code"]) == (status, code)


def test_a_plain_get_is_a_400(srv: ServerThread) -> None:
    reply = call(srv.url, "GET", V1, headers={"api-key": KEY})
    assert reply.status == 400


def test_the_log_shows_the_url_and_the_masked_key(srv: ServerThread) -> None:
    with ws(srv, V1) as connection:
        connection.recv(timeout=10)
    entry = next(e for e in admin_requests(srv.url) if e["path"] == "/openai/v1/realtime")
    assert entry["query_params"] == {"model": ["gpt-realtime"]}
    assert entry["headers"]["api-key"] == mask_secret(KEY)
    assert entry["deployment"] == "gpt-realtime"


def test_a_cut_fault_drops_the_connection_mid_response(srv: ServerThread) -> None:
    add_fault(srv.url, deployment="gpt-realtime", fault="cut", after_frames=2)
    with ws(srv, V1) as connection:
        connection.recv(timeout=10)
        connection.send(json.dumps({"type": "response.create"}))
        got = [json.loads(connection.recv(timeout=10))["type"] for _ in range(2)]
        with pytest.raises(ConnectionClosed) as closed:
            connection.recv(timeout=10)
    assert got == ["response.created", "response.output_item.added"]
    assert closed.value.rcvd is None  # no closing handshake: dropped


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500), ("503", 503)])
def test_http_faults_refuse_the_handshake(srv: ServerThread, fault: str, status: int) -> None:
    add_fault(srv.url, deployment="gpt-realtime", fault=fault)
    assert refused(srv, V1)[0] == status
