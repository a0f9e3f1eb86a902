"""Raw HTTP against the emulator: exact error bodies, frame order and headers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from azure_openai_proxy.emulator import (
    create_emulator_app,
    generation,
    load_emulator_config,
    mask_secret,
    textgen,
)
from azure_openai_proxy.emulator.config import EmulatedDeployment
from tests.emulator.conftest import (
    ENTRA,
    GA,
    KEY,
    admin_requests,
    call,
    chat_path,
    hello,
    sse_data,
)
from tests.support import ServerThread, serve

AUTH = {"api-key": KEY}
RESOURCE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}


def test_every_data_plane_response_has_azure_headers(srv: ServerThread) -> None:
    """x-ms-region is the region's display name, as Azure sends it: "East US", "West
    Europe", "Japan East" in captured replies (EvolvingPrograms/oaib#11: "North Central US")."""
    reply = call(srv.url, "POST", chat_path(), hello(), AUTH)
    assert reply.status == 200
    for name in ("apim-request-id", "x-request-id", "x-ms-region", "azureml-model-session",
                 "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
                 "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"):
        assert name in reply.headers, name
    assert reply.headers["x-ms-region"] == "East US"
    assert reply.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert reply.headers["x-ratelimit-limit-requests"] == "6000"
    cost = len("Hello there") // 4 + 1 + 16
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) == 1_000_000 - cost
    assert call(srv.url, "GET", "/nowhere").headers["apim-request-id"]


def test_no_credentials_401_says_missing_key(srv: ServerThread) -> None:
    """Neither `api-key` nor `Authorization`: Azure's `statusCode` shape saying the key is
    missing (openai/openai-python#1527, continuedev/continue#4601), not the wrong-key body."""
    for path in (chat_path(), "/openai/v1/chat/completions"):
        reply = call(srv.url, "POST", path, hello(model="gpt-4o"))
        assert (reply.status, reply.json()) == (401, {"statusCode": 401, "message": (
            "Access denied due to missing subscription key. Make sure to include subscription "
            "key when making requests to an API.")})


def test_exact_401_bodies(srv: ServerThread) -> None:
    bad_key = call(srv.url, "POST", chat_path(), hello(), {"api-key": "wrong"})
    assert bad_key.status == 401
    assert bad_key.json() == {"error": {"code": "401", "message": (
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
        "provide a valid key for an active subscription and use a correct regional API "
        "endpoint for your resource.")}}
    bad_token = call(srv.url, "POST", chat_path(), hello(), {"Authorization": "Bearer a.b.c"})
    assert bad_token.status == 401
    assert bad_token.json() == {"statusCode": 401, "message": (
        "Unauthorized. Access token is missing, invalid, audience is incorrect "
        "(https://cognitiveservices.azure.com), or have expired.")}
    # A key is a bearer token only on v1; api-key wins when both are sent.
    assert call(srv.url, "POST", chat_path(), hello(),
                {"Authorization": f"Bearer {KEY}"}).status == 401
    assert call(srv.url, "POST", "/openai/v1/chat/completions", hello(model="gpt-4o"),
                {"Authorization": f"Bearer {KEY}"}).status == 200
    assert call(srv.url, "POST", chat_path(), hello(),
                {"Authorization": f"Bearer {ENTRA}"}).status == 200
    assert call(srv.url, "POST", chat_path(), hello(),
                {"api-key": "wrong", "Authorization": f"Bearer {ENTRA}"}).status == 401


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/openai/deployments/gpt-4o/chat/completions", "POST"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2031-01-01", "POST"),
        ("/openai/deployments/gpt-4o/chat/complete?api-version=2024-10-21", "POST"),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", "GET"),
        ("/v1/chat/completions", "POST"),
        ("/openai/deployments/tts/audio/speech?api-version=2024-10-21", "POST"),
    ],
)
def test_404_resource_not_found(srv: ServerThread, path: str, method: str) -> None:
    reply = call(srv.url, method, path, hello() if method == "POST" else None, AUTH)
    assert (reply.status, reply.json()) == (404, RESOURCE_NOT_FOUND)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/openai/responses?api-version=2024-10-21"),
    ("POST", "/openai/responses?api-version=2025-01-01-preview"),
    ("GET", "/openai/responses/resp_1?api-version=2024-12-01-preview"),
])
def test_responses_on_too_old_a_version_name_the_first_one(
    srv: ServerThread, method: str, path: str
) -> None:
    """Not a 404: "Azure OpenAI Responses API is enabled only for api-version
    2025-03-01-preview and later", HTTP 400 (Aider-AI/aider#4029 through litellm's
    BadRequestError; projects quoting it as a 400 on 2024-12-01-preview)."""
    reply = call(srv.url, method, path,
                 {"model": "gpt-4o", "input": "hi"} if method == "POST" else None, AUTH)
    assert (reply.status, reply.json()) == (400, {"error": {"code": "BadRequest", "message": (
        "Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and "
        "later")}})


def test_deployment_not_found_and_operation_not_supported(srv: ServerThread) -> None:
    missing = call(srv.url, "POST", chat_path("nope"), hello(), AUTH)
    assert missing.status == 404 and missing.json()["error"]["code"] == "DeploymentNotFound"
    assert missing.json()["error"]["message"].startswith(
        "The API deployment for this resource does not exist.")
    on_v1 = call(srv.url, "POST", "/openai/v1/chat/completions", hello(model="nope"), AUTH)
    assert on_v1.json()["error"]["code"] == "DeploymentNotFound"
    wrong = call(srv.url, "POST",
                 f"/openai/deployments/gpt-4o/embeddings?api-version={GA}", {"input": "x"}, AUTH)
    assert wrong.status == 400 and wrong.json()["error"]["code"] == "OperationNotSupported"


@pytest.mark.parametrize(
    ("deployment", "operation", "body", "said"),
    [
        ("gpt-4o", "embeddings", {"input": "x"}, "embeddings operation"),
        ("text-embedding-3-large", "chat/completions", hello(), "chatCompletion operation"),
        ("gpt-35-turbo", "completions", {"prompt": "x"}, "completion operation"),
        ("gpt-4o", "images/generations", {"prompt": "x"}, "imageGenerations operation"),
    ],
)
def test_operation_not_supported_names_azures_operation_and_model(
    srv: ServerThread, deployment: str, operation: str, body: dict[str, object], said: str
) -> None:
    """Azure's words: "The chatCompletion operation does not work with the specified model,
    gpt-4o-mini." (llama_index#16503), "The completion operation ... gpt-35-turbo."
    (langchainjs#2633: a 0613 deployment), "The embeddings operation ..." (llama_index#6436):
    the operation's own name and the model without its version."""
    reply = call(srv.url, "POST",
                 f"/openai/deployments/{deployment}/{operation}?api-version={GA}", body, AUTH)
    model = deployment  # the default set names each deployment after its model (gpt-4o-2024-08-06)
    assert reply.status == 400
    assert reply.json()["error"] == {"code": "OperationNotSupported", "message": (
        f"The {said} does not work with the specified model, {model}. Please choose "
        "different model and try again. You can learn more about which models can be used "
        "with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993.")}


def test_dated_version_on_v1(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", "/openai/v1/chat/completions?api-version=2024-10-21",
                 hello(model="gpt-4o"), AUTH)
    assert (reply.status, reply.json()) == (
        400, {"error": {"code": "BadRequest", "message": "API version not supported"}})
    assert call(srv.url, "POST", "/openai/v1/chat/completions?api-version=preview",
                hello(model="gpt-4o"), AUTH).status == 200


def test_bad_input_gets_azure_answers_never_a_traceback(srv: ServerThread) -> None:
    malformed = call(srv.url, "POST", chat_path(), b'{"messages": [', {**AUTH,
                     "Content-Type": "application/json"})
    assert malformed.status == 400
    assert malformed.json()["error"]["message"].startswith("We could not parse the JSON body")
    assert call(srv.url, "POST", chat_path(), b"[1]", AUTH).status == 400
    missing = call(srv.url, "POST", chat_path(), {"model": "x"}, AUTH)
    assert missing.status == 400 and missing.json()["error"]["param"] == "messages"
    too_big = call(srv.url, "POST", chat_path(), b"x" * (26 * 1024 * 1024), AUTH)
    assert too_big.status == 413 and too_big.json()["error"]["code"] == "RequestEntityTooLarge"
    multipart = call(srv.url, "POST",
                     f"/openai/deployments/whisper/audio/transcriptions?api-version={GA}",
                     b"garbage", {**AUTH, "Content-Type": "multipart/form-data; boundary=z"})
    assert multipart.status == 400 and "error" in multipart.json()


def test_parameter_gating_and_reasoning_rules_on_the_wire(srv: ServerThread) -> None:
    old = call(srv.url, "POST", chat_path(version="2024-06-01"),
               hello(stream=True, stream_options={"include_usage": True}), AUTH)
    assert old.json() == {"error": {
        "message": "Unrecognized request argument supplied: stream_options",
        "type": "invalid_request_error", "param": None, "code": None}}
    reasoning_old = call(srv.url, "POST", chat_path("o3-mini", GA), hello(), AUTH)
    assert reasoning_old.json()["error"]["message"] == (
        "Model {modelName} is enabled only for api versions 2024-12-01-preview and later")
    temperature = call(srv.url, "POST", chat_path("o3-mini", "2025-01-01-preview"),
                       hello(temperature=0.2), AUTH)
    assert temperature.json()["error"]["code"] == "unsupported_parameter"


def test_prompt_filter_error_exact_shape(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", chat_path(),
                 {"messages": [{"role": "user", "content": "x TRIGGER_PROMPT_FILTER y"}]}, AUTH)
    error = reply.json()["error"]
    assert reply.status == 400
    assert set(error) == {"message", "type", "param", "code", "status", "innererror"}
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["hate"]["filtered"] is True


def test_stream_frame_order_exactly(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", chat_path(),
                 hello(stream=True, stream_options={"include_usage": True}), AUTH)
    assert reply.headers["content-type"].startswith("text/event-stream")
    data = sse_data(reply.body)
    assert data[-1] == "[DONE]"
    frames = [json.loads(d) for d in data[:-1]]
    assert frames[0]["choices"] == [] and frames[0]["id"] == "" and "prompt_filter_results" in frames[0]
    assert frames[1]["choices"][0]["delta"]["role"] == "assistant"
    contents = frames[2:-2]
    assert len(contents) == 4 and all("content" in f["choices"][0]["delta"] for f in contents)
    assert all(f["choices"][0]["content_filter_results"] for f in contents)
    assert frames[-2]["choices"][0]["delta"] == {} and frames[-2]["choices"][0]["finish_reason"] == "stop"
    assert frames[-1]["choices"] == [] and frames[-1]["usage"]["completion_tokens"] == 16
    assert reply.body.endswith(b"data: [DONE]\n\n")


def test_completion_filter_stream_and_prompt_annotations(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", chat_path(version="2023-07-01-preview"),
                 {"messages": [{"role": "user", "content": "TRIGGER_COMPLETION_FILTER"}],
                  "stream": True}, AUTH)
    frames = [json.loads(d) for d in sse_data(reply.body)[:-1]]
    assert "prompt_annotations" in frames[0]
    assert any("content" in f["choices"][0]["delta"] for f in frames[2:-1])
    assert frames[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_responses_stream_has_event_lines(srv: ServerThread) -> None:
    reply = call(srv.url, "POST", "/openai/v1/responses",
                 {"model": "gpt-4o", "input": "Hi", "stream": True}, AUTH)
    blocks = [b for b in reply.body.decode().split("\n\n") if b]
    first_event, first_data = blocks[0].split("\n")
    assert first_event == "event: response.created"
    assert json.loads(first_data[len("data: "):])["type"] == "response.created"
    assert all(b.startswith("event: ") for b in blocks)
    assert "[DONE]" not in reply.body.decode()


def test_request_log_records_everything_with_secrets_masked(srv: ServerThread) -> None:
    call(srv.url, "POST", chat_path() + "&extra=1&extra=2", hello(), {**AUTH, "X-Other": "v"})
    call(srv.url, "POST", chat_path("nope"), hello(), {"api-key": "wrong"})
    entries = admin_requests(srv.url)
    assert [e["status"] for e in entries] == [200, 401]
    first = entries[0]
    assert first["method"] == "POST" and first["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert first["query_params"] == {"api-version": [GA], "extra": ["1", "2"]}
    assert first["query"] == f"api-version={GA}&extra=1&extra=2"
    assert first["headers"]["api-key"] == mask_secret(KEY) and first["headers"]["x-other"] == "v"
    assert first["json"] == hello() and first["deployment"] == "gpt-4o"
    assert first["body_size"] == len(first["body"].encode())
    assert entries[1]["deployment"] is None
    assert call(srv.url, "DELETE", "/_emulator/requests").status == 200
    assert admin_requests(srv.url) == []


def test_async_filter_deployment_streams_annotations(config: object) -> None:
    from dataclasses import replace

    from azure_openai_proxy.emulator import EmulatedDeployment, EmulatorConfig, create_emulator_app
    from tests.support import serve

    assert isinstance(config, EmulatorConfig)
    async_config = replace(config, deployments=(
        EmulatedDeployment("af", "gpt-4o-2024-08-06", "chat", async_filter=True),))
    with serve(lambda: create_emulator_app(async_config)) as srv:
        reply = call(srv.url, "POST", chat_path("af"), hello(stream=True), AUTH)
    frames = [json.loads(d) for d in sse_data(reply.body)[:-1]]
    notes = [f for f in frames if f["choices"] and "content_filter_offsets" in f["choices"][0]]
    assert notes and all("delta" not in n["choices"][0] and n["id"] == "" for n in notes)


def test_a_prompt_past_the_context_window_is_refused_before_any_answer(srv: ServerThread) -> None:
    """gpt-35-turbo-0125's window is 16,385 tokens: 16,006 prompt tokens and max_tokens 1000
    do not fit (azure-search-openai-demo#1199's words); without max_tokens they do."""
    long = {"messages": [{"role": "user", "content": "word " * 16000}]}
    refused = call(srv.url, "POST", chat_path("gpt-35-turbo"), {**long, "max_tokens": 1000}, AUTH)
    assert (refused.status, refused.json()) == (400, {"error": {
        "message": "This model's maximum context length is 16385 tokens. However, you "
        "requested 17006 tokens (16006 in the messages, 1000 in the completion). Please "
        "reduce the length of the messages or completion.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
    }})
    assert call(srv.url, "POST", chat_path("gpt-35-turbo"), long, AUTH).status == 200


@pytest.mark.parametrize(("deployment", "most"), [("gpt-4o", 16384), ("gpt-4o-mini", 16384),
                                                  ("gpt-35-turbo", 4096)])
def test_max_tokens_past_the_models_output_limit(
    srv: ServerThread, deployment: str, most: int
) -> None:
    """gpt-4o and gpt-4o-mini write at most 16,384 tokens (charmbracelet/catwalk#41: 20000
    refused), gpt-35-turbo 4,096; the limit itself is accepted."""
    refused = call(srv.url, "POST", chat_path(deployment), hello(max_tokens=most + 1), AUTH)
    assert refused.status == 400 and refused.json()["error"]["param"] == "max_tokens"
    assert refused.json()["error"]["message"] == (
        f"max_tokens is too large: {most + 1}. This model supports at most {most} completion "
        f"tokens, whereas you provided {most + 1}.")
    assert call(srv.url, "POST", chat_path(deployment), hello(max_tokens=most), AUTH).status == 200


def test_gpt5_chat_takes_max_tokens_up_to_its_output_limit() -> None:
    """Azure's gpt-5-chat is no reasoning model: max_tokens 20000 is refused only as "too
    large" (stanfordnlp/dspy#8724: "This model supports at most 16384 completion tokens"),
    a smaller one and a temperature are served."""
    base = load_emulator_config(None, api_key=KEY)
    config = replace(base, deployments=(
        *base.deployments, EmulatedDeployment("gpt-5-chat", "gpt-5-chat-2025-08-07", "chat")))
    with serve(lambda: create_emulator_app(config)) as server:
        path = chat_path("gpt-5-chat", "2025-04-01-preview")
        refused = call(server.url, "POST", path, hello(max_tokens=20000), AUTH)
        assert refused.status == 400 and refused.json()["error"]["message"] == (
            "max_tokens is too large: 20000. This model supports at most 16384 completion "
            "tokens, whereas you provided 20000.")
        assert call(server.url, "POST", path, hello(max_tokens=100, temperature=0.2),
                    AUTH).status == 200


def test_a_request_past_both_the_window_and_the_output_limit_gets_the_context_error() -> None:
    """azure-sdk-for-python#40986: gpt-4.1 asked for max_tokens 1,000,000 (past its 32,768
    output limit) with 124,171 prompt tokens got context_length_exceeded "(124171 in the
    messages, 1000000 in the completion)", not "max_tokens is too large"."""
    base = load_emulator_config(None, api_key=KEY)
    config = replace(base, deployments=(
        EmulatedDeployment("small", "gpt-4.1-2025-04-14", "chat", context_tokens=100),))
    with serve(lambda: create_emulator_app(config)) as server:
        reply = call(server.url, "POST", chat_path("small"), hello(max_tokens=1_000_000), AUTH)
    assert reply.status == 400
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "in the messages, 1000000 in the completion)" in error["message"]


def test_a_prompt_is_counted_once_per_request(
    srv: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The context check and the usage share one count of the prompt, and the rate
    estimate needs only its characters: counting is a regex over all its text (~73 ms for
    100,000 words), done twice for a chat and three times for a completions prompt."""
    seen: list[str] = []

    def counting(text: str) -> int:
        seen.append(text)
        return len(text.split())

    monkeypatch.setattr(textgen, "count_tokens", counting)
    monkeypatch.setattr(generation, "count_tokens", counting)
    prompt = "a prompt counted once"
    chat = call(srv.url, "POST", chat_path("gpt-4o"),
                {"messages": [{"role": "user", "content": prompt}]}, AUTH)
    assert chat.status == 200 and chat.json()["usage"]["prompt_tokens"] == 3 + 3 + 4
    path = "/openai/deployments/gpt-35-turbo-instruct/completions?api-version=2024-10-21"
    text = call(srv.url, "POST", path, {"prompt": prompt}, AUTH)
    assert text.status == 200 and text.json()["usage"]["prompt_tokens"] == 4
    assert seen.count(prompt) == 2  # one for each request


def test_a_gpt5_prompt_past_its_input_limit_is_refused_inside_its_window() -> None:
    """gpt-5's 400,000-token window takes at most 272,000 prompt tokens: "Input tokens
    exceed the configured limit of 272000 tokens. Your messages resulted in N tokens."
    (cline#5474; Azure enforces it as OpenAI does: BerriAI/litellm#13496, #18928);
    was served."""
    base = load_emulator_config(None, api_key=KEY)
    config = replace(base, deployments=(
        EmulatedDeployment("gpt-5-mini", "gpt-5-mini-2025-08-07", "chat"),))
    long = {"messages": [{"role": "user", "content": "word " * 272_000}]}
    with serve(lambda: create_emulator_app(config)) as server:
        reply = call(server.url, "POST", chat_path("gpt-5-mini", "2025-04-01-preview"), long, AUTH)
    assert (reply.status, reply.json()) == (400, {"error": {
        "message": "Input tokens exceed the configured limit of 272000 tokens. Your messages "
        "resulted in 272006 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded",
    }})
