"""The Realtime bridge's pure parts: which URLs are realtime ones, where the key is, the
upstream URL and api-version, and reading a response's usage."""

from __future__ import annotations

import orjson
import pytest

from azure_openai_proxy.gateway.realtime_wire import (
    REALTIME_API_VERSION,
    RealtimeTarget,
    credentials,
    handshake_problem,
    realtime_api_version,
    realtime_target,
    realtime_url,
    response_usage,
)
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.upstream.websocket import sendable_close


def deployment(**fields: object) -> DeploymentSettings:
    base: dict[str, object] = {"model_name": "rt", "deployment_name": "my.rt",
                               "endpoint": "https://res.openai.azure.com", "api_key": "k"}
    return DeploymentSettings.model_validate({**base, **fields})


@pytest.mark.parametrize("path, query, expected", [
    ("/v1/realtime", "model=gpt-realtime", RealtimeTarget("gpt-realtime", False)),
    ("/realtime", "model=m", RealtimeTarget("m", False)),
    ("/openai/v1/realtime/", "model=m&intent=x", RealtimeTarget("m", False)),
    ("/v1/realtime", "", RealtimeTarget(None, False)),
    ("/openai/realtime", "api-version=2025-04-01-preview&deployment=d",
     RealtimeTarget("d", True, "2025-04-01-preview")),
    ("/v1/chat/completions", "", None),
    ("/v1/realtime/sessions", "", None),
    ("/openai/deployments/d/realtime", "", None),
])
def test_realtime_targets(path: str, query: str, expected: RealtimeTarget | None) -> None:
    assert realtime_target(path, query, "/v1") == expected


def test_a_custom_api_base_is_a_realtime_prefix_too() -> None:
    assert realtime_target("/api/realtime", "model=m", "/api") == RealtimeTarget("m", False)
    assert realtime_target("/v1/realtime", "model=m", "/api") is None


def test_a_key_is_read_from_headers_first_then_from_the_browser_subprotocol() -> None:
    headers = {"Authorization": "Bearer sk-a", "sec-websocket-protocol": "realtime"}
    assert credentials(headers) is headers
    browser = {"sec-websocket-protocol": "realtime, openai-insecure-api-key.sk-b, "
                                         "openai-beta.realtime-v1"}
    assert credentials(browser) == {"Authorization": "Bearer sk-b"}
    empty = {"sec-websocket-protocol": "realtime, openai-insecure-api-key."}
    assert credentials(empty) is empty


def test_dated_deployments_get_a_realtime_capable_preview() -> None:
    ga = deployment(api_version="2024-10-21")
    assert realtime_api_version(ga, None, True) == REALTIME_API_VERSION
    assert realtime_api_version(deployment(api_version="2024-12-01-preview"), None,
                                True) == "2024-12-01-preview"
    assert realtime_api_version(deployment(api_version="2024-08-01-preview"), None,
                                True) == REALTIME_API_VERSION
    # A native client's own, when honoured and able.
    assert realtime_api_version(ga, "2024-10-01-preview", True) == "2024-10-01-preview"
    assert realtime_api_version(ga, "2024-10-01-preview", False) == REALTIME_API_VERSION
    assert realtime_api_version(ga, "2024-10-21", True) == REALTIME_API_VERSION
    assert realtime_api_version(ga, "../x", True) == REALTIME_API_VERSION


def test_v1_deployments_take_no_dated_version() -> None:
    assert realtime_api_version(deployment(api="v1"), "2025-04-01-preview", True) is None
    assert realtime_api_version(deployment(api="v1", api_version="preview"), None,
                                True) == "preview"


def test_realtime_urls_follow_the_deployments_family_and_scheme() -> None:
    assert realtime_url(deployment(), "2025-04-01-preview") == (
        "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview"
        "&deployment=my.rt")
    assert realtime_url(deployment(api="v1", endpoint="http://127.0.0.1:9/apim"), None) == (
        "ws://127.0.0.1:9/apim/openai/v1/realtime?model=my.rt")
    assert realtime_url(deployment(api="v1"), "preview").endswith("?model=my.rt&api-version=preview")


def test_usage_is_read_from_response_done_only() -> None:
    usage = {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2}
    done = orjson.dumps({"type": "response.done", "response": {"usage": usage}})
    assert response_usage(done) == usage
    assert response_usage(done.decode()) == usage
    delta = orjson.dumps({"type": "response.text.delta", "delta": "response.done"}).decode()
    assert response_usage(delta) is None
    assert response_usage('{"type":"response.done"') is None  # not JSON
    assert response_usage('{"type":"response.done","response":{"usage":null}}') is None
    assert response_usage('["response.done"]') is None


def test_close_codes_that_a_frame_cannot_carry_become_a_normal_close() -> None:
    assert [sendable_close(c) for c in (None, 1000, 1005, 1006, 1015, 4001, 999, 5000)] == [
        1000, 1000, 1000, 1000, 1000, 4001, 1000, 1000]


def test_a_handshake_is_judged_by_the_websockets_library_before_azure_is_called() -> None:
    good = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    assert handshake_problem("/v1/realtime?model=m", good) is None
    no_key = [h for h in good if h[0] != "Sec-WebSocket-Key"]
    assert "Sec-WebSocket-Key" in (handshake_problem("/v1/realtime", no_key) or "")
    old = [h if h[0] != "Sec-WebSocket-Version" else (h[0], "8") for h in good]
    assert handshake_problem("/v1/realtime", old) is not None


def test_a_response_create_is_read_with_its_event_id_and_most_output() -> None:
    from azure_openai_proxy.gateway.realtime_wire import ResponseRequested, response_requested

    assert response_requested('{"type":"response.create"}') == ResponseRequested(None, None)
    asked = orjson.dumps({"type": "response.create", "event_id": "e1",
                          "response": {"max_output_tokens": 20}})
    assert response_requested(asked) == ResponseRequested("e1", 20)
    assert response_requested(
        '{"type":"response.create","response":{"max_response_output_tokens":"inf"}}'
    ) == ResponseRequested(None, None)
    assert response_requested('{"type":"session.update","x":"response.create"}') is None
    assert response_requested(b'{"type":"response.create"') is None


def test_a_response_done_without_usage_still_ends_a_response() -> None:
    from azure_openai_proxy.gateway.realtime_wire import (
        ResponseDone,
        response_ended,
        upstream_error_id,
    )

    assert response_ended('{"type":"response.done","response":{"usage":null}}') == (
        ResponseDone(None, {}))
    assert response_ended('{"type":"response.done","response":{"id":"resp_2"}}') == (
        ResponseDone("resp_2", {}))
    assert response_ended('{"type":"response.done","response":null}') == ResponseDone(None, {})
    assert response_ended('{"type":"response.created"}') is None
    error = '{"type":"error","error":{"code":"x","event_id":"e1"}}'
    assert upstream_error_id(error) == "e1"
    assert upstream_error_id('{"type":"error","error":{"event_id":null}}') is None
    assert upstream_error_id('{"type":"response.text.delta","delta":"error"}') is None


def test_every_subprotocol_but_the_key_is_forwarded_and_openai_beta_becomes_its_header() -> None:
    from azure_openai_proxy.gateway.realtime_wire import forwarded_subprotocols

    offered = {"sec-websocket-protocol":
               "realtime, openai-insecure-api-key.sk-secret,openai-beta.realtime-v1"}
    assert forwarded_subprotocols(offered) == (
        ["realtime", "openai-beta.realtime-v1"], "realtime-v1")
    # A header the client sent itself is kept (it is forwarded as it is).
    assert forwarded_subprotocols({**offered, "openai-beta": "x"})[1] is None
    assert forwarded_subprotocols({}) == ([], None)
    assert forwarded_subprotocols({"sec-websocket-protocol": "openai-beta."}) == (
        ["openai-beta."], None)
