from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.sse import SseDecoder

# ---- recorded Azure frame sequences, built as in section 4 of azure-openai-wire.md ----

AZURE_MODEL = "gpt-4o-2024-08-06"
ID = "chatcmpl-AzR3c0rded"
CREATED = 1727000000
SAFE = {"filtered": False, "severity": "safe"}
FILTERS = {"hate": SAFE, "sexual": SAFE, "violence": SAFE, "self_harm": SAFE}
PROMPT_FILTERS = [
    {
        "prompt_index": 0,
        "content_filter_results": {
            **FILTERS,
            "jailbreak": {"filtered": False, "detected": False},
        },
    }
]
USAGE = {"completion_tokens": 9, "prompt_tokens": 14, "total_tokens": 23}


def frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def prompt_frame(key: str = "prompt_filter_results") -> bytes:
    return frame({"choices": [], "created": 0, "id": "", "model": "", "object": "", key: PROMPT_FILTERS})


def chunk(choice: dict[str, Any], *, object_: str = "chat.completion.chunk", **extra: Any) -> bytes:
    return frame(
        {
            "choices": [choice],
            "created": CREATED,
            "id": ID,
            "model": AZURE_MODEL,
            "object": object_,
            "system_fingerprint": "fp_5b26d85e12",
            **extra,
        }
    )


def delta(content: str | None = None, /, *, filters: Any = FILTERS, **more: Any) -> bytes:
    d: dict[str, Any] = {} if content is None else {"content": content}
    d.update(more)
    return chunk(
        {
            "content_filter_results": filters,
            "delta": d,
            "finish_reason": None,
            "index": 0,
            "logprobs": None,
        }
    )


def role_frame() -> bytes:
    return delta("", filters={}, role="assistant")


def finish_frame(reason: str = "stop", filters: Any = None) -> bytes:
    return chunk(
        {
            "content_filter_results": filters or {},
            "delta": {},
            "finish_reason": reason,
            "index": 0,
            "logprobs": None,
        }
    )


def usage_frame() -> bytes:
    return frame(
        {
            "choices": [],
            "created": CREATED,
            "id": ID,
            "model": AZURE_MODEL,
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_5b26d85e12",
            "usage": USAGE,
        }
    )


def async_annotation(check: int, start: int, end: int) -> bytes:
    return frame(
        {
            "choices": [
                {
                    "content_filter_offsets": {
                        "check_offset": check,
                        "start_offset": start,
                        "end_offset": end,
                    },
                    "content_filter_results": FILTERS,
                    "finish_reason": None,
                    "index": 0,
                }
            ],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
        }
    )


DEFAULT_FILTER = [
    prompt_frame(),
    role_frame(),
    delta("The capital of "),  # the default filter releases text in bursts
    delta("France is Paris."),
    finish_frame("stop"),
    DONE,
]
DEFAULT_WITH_USAGE = [*DEFAULT_FILTER[:-1], usage_frame(), DONE]
ASYNC_FILTER = [
    prompt_frame(),
    role_frame(),
    delta("The capital", filters={}),
    delta(" of France", filters={}),
    async_annotation(0, 0, 22),
    delta(" is Paris.", filters={}),
    finish_frame("stop"),
    async_annotation(22, 22, 32),
    DONE,
]
PROMPT_ANNOTATIONS = [
    prompt_frame("prompt_annotations"),
    role_frame(),
    delta("Hi"),
    finish_frame(),
    DONE,
]
TOOL_CALLS = [
    prompt_frame(),
    delta(
        None,
        filters={},
        role="assistant",
        content=None,
        tool_calls=[
            {
                "index": 0,
                "id": "call_7",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    ),
    delta(None, filters={}, tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
    delta(None, filters={}, tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
    finish_frame("tool_calls"),
    DONE,
]
FILTERED_MID_STREAM = [
    prompt_frame(),
    role_frame(),
    delta("Here is how to"),
    finish_frame("content_filter", {**FILTERS, "violence": {"filtered": True, "severity": "medium"}}),
    DONE,
]
CUT = [prompt_frame(), role_frame(), delta("The capital of ")]


def blocking_annotation(check: int, start: int, end: int) -> bytes:
    """An async-filter annotation whose verdict blocks the text (a custom blocklist's)."""
    data = orjson.loads(async_annotation(check, start, end)[6:-2])
    data["choices"][0]["content_filter_results"] = {
        "custom_blocklists": [{"filtered": True, "id": "blocked-words"}]}
    return frame(data)


# A block the async filter found after the model's stop: only the annotation's verdict
# says the answer was blocked (no finish_reason content_filter), then usage and [DONE].
BLOCKED_AFTER_STOP = [
    prompt_frame(),
    role_frame(),
    delta("Here is", filters={}),
    async_annotation(0, 0, 7),
    delta(" how to", filters={}),
    finish_frame("stop"),
    async_annotation(7, 7, 14),
    blocking_annotation(7, 0, 14),
    usage_frame(),
    DONE,
]


def run(
    frames: list[bytes], policy: StreamPolicy | None = None, **finish: Any
) -> tuple[ChatStreamNormalizer, bytes]:
    normalizer = ChatStreamNormalizer(policy or StreamPolicy(client_model="gpt-4o"))
    out = b"".join(normalizer.feed(f) for f in frames) + normalizer.finish(**finish)
    return normalizer, out


def events(out: bytes) -> list[Any]:
    """The client's view: every data payload, JSON-decoded except the [DONE] sentinel."""
    decoder = SseDecoder()
    evs = decoder.feed(out) + decoder.flush()
    assert all(e.raw.startswith(b"data: ") and e.raw.endswith(b"\n\n") for e in evs)
    return ["[DONE]" if e.data == b"[DONE]" else orjson.loads(e.data or b"") for e in evs]


def chunks(out: bytes) -> list[dict[str, Any]]:
    return [e for e in events(out) if isinstance(e, dict) and "choices" in e]


# ---- the recorded sequences ----


def test_default_filter_stream_reads_like_openai() -> None:
    normalizer, out = run(DEFAULT_FILTER)
    got = events(out)
    assert got[-1] == "[DONE]"
    frames = got[:-1]
    assert [f["choices"][0]["delta"] for f in frames] == [
        {"content": "", "role": "assistant"},
        {"content": "The capital of "},
        {"content": "France is Paris."},
        {},
    ]
    assert {(f["id"], f["created"], f["model"], f["object"]) for f in frames} == {
        (ID, CREATED, "gpt-4o", "chat.completion.chunk")
    }
    assert normalizer.finish_reasons == {0: "stop"}
    assert (normalizer.frames_in, normalizer.frames_out) == (6, 5)
    assert normalizer.usage is None


def test_prompt_filter_results_ride_on_the_first_forwarded_frame() -> None:
    _, out = run(DEFAULT_FILTER)
    frames = chunks(out)
    assert frames[0]["prompt_filter_results"] == PROMPT_FILTERS
    assert all("prompt_filter_results" not in f for f in frames[1:])
    assert frames[1]["choices"][0]["content_filter_results"] == FILTERS


def test_prompt_annotations_variant_is_dropped_and_carried_under_its_name() -> None:
    _, out = run(PROMPT_ANNOTATIONS)
    frames = chunks(out)
    assert all(f["choices"] for f in frames)
    assert frames[0]["prompt_annotations"] == PROMPT_FILTERS


def test_async_filter_annotation_frames_are_dropped() -> None:
    normalizer, out = run(ASYNC_FILTER)
    frames = chunks(out)
    assert "".join(f["choices"][0]["delta"].get("content", "") for f in frames) == (
        "The capital of France is Paris."
    )
    assert all("content_filter_offsets" not in f["choices"][0] for f in frames)
    assert all(f["id"] == ID and f["model"] == "gpt-4o" for f in frames)
    assert events(out)[-1] == "[DONE]"
    assert normalizer.frames_in == 9


def test_tool_call_stream_keeps_tool_call_deltas_intact() -> None:
    normalizer, out = run(TOOL_CALLS)
    frames = chunks(out)
    calls = [f["choices"][0]["delta"].get("tool_calls") for f in frames[:-1]]
    assert calls[0][0]["function"]["name"] == "get_weather"
    assert "".join(c[0]["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert normalizer.finish_reasons == {0: "tool_calls"}
    assert events(out)[-1] == "[DONE]"


def test_content_filter_finish_ends_with_an_error_event_then_done() -> None:
    normalizer, out = run(FILTERED_MID_STREAM)
    got = events(out)
    assert got[-3]["choices"][0]["finish_reason"] == "content_filter"
    error = got[-2]["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "content_filter",
        None,
    )
    assert error["content_filter_result"]["violence"] == {"filtered": True, "severity": "medium"}
    assert got[-1] == "[DONE]"
    assert normalizer.finish_reasons == {0: "content_filter"}


def test_a_block_found_after_the_stop_ends_with_the_content_filter_error() -> None:
    # Dropped silently before: the client read a complete answer Azure had blocked.
    normalizer, out = run(BLOCKED_AFTER_STOP)
    got = events(out)
    kept = [f["choices"][0] for f in chunks(out) if f["choices"]]
    assert "".join(c["delta"].get("content", "") for c in kept) == "Here is how to"
    assert all("content_filter_offsets" not in c for c in kept)
    assert got[-3]["usage"] == USAGE
    error = got[-2]["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "content_filter")
    assert error["content_filter_result"] == {
        "custom_blocklists": [{"filtered": True, "id": "blocked-words"}]}
    assert got[-1] == "[DONE]"
    assert normalizer.finish_reasons == {0: "stop"}
    _, quiet = run(BLOCKED_AFTER_STOP, StreamPolicy(client_model=None, error_on_content_filter=False))
    assert not any("error" in e for e in events(quiet) if isinstance(e, dict))


def test_a_blocking_annotation_beside_a_kept_choice_is_not_lost() -> None:
    # n > 1: one frame may hold choice 1's delta and choice 0's annotation.
    mixed = orjson.loads(delta(" more")[6:-2])
    mixed["choices"] = [orjson.loads(blocking_annotation(0, 0, 7)[6:-2])["choices"][0],
                        {**mixed["choices"][0], "index": 1}]
    _, out = run([*BLOCKED_AFTER_STOP[:5], frame(mixed), finish_frame("stop"), DONE])
    got = events(out)
    assert got[-3]["choices"][0]["delta"] == {}  # the finish frame
    assert [c["index"] for c in got[-4]["choices"]] == [1]  # the annotation dropped
    assert got[-2]["error"]["code"] == "content_filter" and got[-1] == "[DONE]"


def test_an_annotation_that_only_detects_ends_the_stream_as_usual() -> None:
    detected = orjson.loads(async_annotation(0, 0, 7)[6:-2])
    detected["choices"][0]["content_filter_results"]["protected_material_text"] = {
        "detected": True, "filtered": False}
    _, out = run([*BLOCKED_AFTER_STOP[:7], frame(detected), usage_frame(), DONE])
    assert not any("error" in e for e in events(out) if isinstance(e, dict))


def test_content_filter_error_comes_after_the_usage_frame() -> None:
    _, out = run([*FILTERED_MID_STREAM[:-1], usage_frame(), DONE])
    got = events(out)
    assert "usage" in got[-3] and "error" in got[-2] and got[-1] == "[DONE]"


def test_content_filter_error_can_be_turned_off() -> None:
    _, out = run(FILTERED_MID_STREAM, StreamPolicy(client_model=None, error_on_content_filter=False))
    assert not any("error" in e for e in events(out) if isinstance(e, dict))
    assert events(out)[-1] == "[DONE]"


def test_content_filter_error_omits_categories_when_azure_fields_are_stripped() -> None:
    _, out = run(FILTERED_MID_STREAM, StreamPolicy(client_model=None, keep_azure_fields=False))
    [error] = [e["error"] for e in events(out) if isinstance(e, dict) and "error" in e]
    assert "content_filter_result" not in error and error["code"] == "content_filter"


def test_usage_frame_is_forwarded_when_the_client_asked() -> None:
    normalizer, out = run(DEFAULT_WITH_USAGE)
    got = events(out)
    assert got[-2]["choices"] == [] and got[-2]["usage"] == USAGE
    assert got[-2]["model"] == "gpt-4o"
    assert normalizer.usage == USAGE


def test_usage_frame_is_stripped_but_recorded_when_the_gateway_asked() -> None:
    normalizer, out = run(DEFAULT_WITH_USAGE, StreamPolicy(client_model="gpt-4o", strip_usage_frame=True))
    assert all(f["choices"] for f in chunks(out))
    assert normalizer.usage == USAGE


def test_usage_on_a_choices_frame_is_removed_when_stripping_and_recorded() -> None:
    usage_on_finish = chunk({"delta": {}, "finish_reason": "stop", "index": 0}, usage=USAGE)
    normalizer, out = run([role_frame(), usage_on_finish, DONE], StreamPolicy(None, strip_usage_frame=True))
    assert "usage" not in chunks(out)[-1]
    assert normalizer.usage == USAGE


def test_cut_stream_ends_with_an_interrupted_error_then_done() -> None:
    normalizer, out = run(CUT)
    got = events(out)
    assert got[-2]["error"]["type"] == "server_error"
    assert got[-2]["error"]["code"] == "stream_interrupted"
    assert "no [DONE]" in got[-2]["error"]["message"]
    assert got[-1] == "[DONE]"
    assert normalizer.done


def test_upstream_failure_reason_goes_into_the_error_message() -> None:
    _, out = run(CUT, upstream_failed="read timeout after 60s")
    assert "read timeout after 60s" in events(out)[-2]["error"]["message"]


def test_cut_after_a_content_filter_finish_reports_only_the_filter() -> None:
    _, out = run(FILTERED_MID_STREAM[:-1])
    errors = [e["error"]["code"] for e in events(out) if isinstance(e, dict) and "error" in e]
    assert errors == ["content_filter"]


def test_unterminated_done_at_eof_counts_as_done() -> None:
    _, out = run([role_frame(), finish_frame(), b"data: [DONE]"])
    assert events(out)[-1] == "[DONE]"
    assert not any("error" in e for e in events(out) if isinstance(e, dict))


def test_legacy_text_completion_stream() -> None:
    text = {
        "text": "Hello",
        "index": 0,
        "finish_reason": None,
        "logprobs": None,
        "content_filter_results": FILTERS,
    }
    done = {"text": "", "index": 0, "finish_reason": "length", "logprobs": None}
    normalizer, out = run(
        [
            prompt_frame(),
            chunk(text, object_="text_completion"),
            chunk(done, object_="text_completion"),
            DONE,
        ],
        StreamPolicy(client_model="gpt-35-turbo-instruct"),
    )
    frames = chunks(out)
    assert [f["choices"][0]["text"] for f in frames] == ["Hello", ""]
    assert {f["model"] for f in frames} == {"gpt-35-turbo-instruct"}
    assert normalizer.finish_reasons == {0: "length"}


# ---- single rules ----


def test_unchanged_frames_are_forwarded_as_their_raw_bytes() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model=None))
    normalizer.feed(role_frame())
    content = delta("same bytes")
    assert normalizer.feed(content) == content


def test_client_model_name_is_written_into_every_frame() -> None:
    _, out = run(DEFAULT_WITH_USAGE, StreamPolicy(client_model="my-gpt"))
    assert {f["model"] for f in chunks(out)} == {"my-gpt"}


def test_without_client_model_azure_model_is_kept_and_filled_where_empty() -> None:
    empty_model = frame(
        {
            "choices": [{"delta": {"content": "x"}, "index": 0}],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
        }
    )
    _, out = run([role_frame(), empty_model, DONE], StreamPolicy(client_model=None))
    last = chunks(out)[-1]
    assert (last["id"], last["created"], last["model"], last["object"]) == (
        ID,
        CREATED,
        AZURE_MODEL,
        "chat.completion.chunk",
    )


def test_a_zero_created_is_filled_in_on_a_steady_stream() -> None:
    zero = orjson.loads(delta("x")[6:])
    zero["created"] = 0
    _, out = run([role_frame(), delta("a"), frame(zero), DONE], StreamPolicy(client_model=None))
    assert [f["created"] for f in chunks(out)] == [CREATED] * 3


def test_a_later_different_id_is_overwritten_for_consistency() -> None:
    other = frame(
        {"choices": [{"delta": {"content": "x"}, "index": 0}], "id": "chatcmpl-other", "created": 5}
    )
    _, out = run([role_frame(), other, DONE])
    assert {(f["id"], f["created"]) for f in chunks(out)} == {(ID, CREATED)}


def test_only_the_id_differing_on_a_steady_stream_is_still_fixed() -> None:
    other = orjson.loads(delta("x")[6:])
    other["id"] = "chatcmpl-other"
    _, out = run([role_frame(), delta("a"), frame(other), DONE], StreamPolicy(client_model=None))
    assert [f["id"] for f in chunks(out)] == [ID] * 3


def test_a_choice_with_a_finish_reason_but_no_delta_gets_an_empty_delta() -> None:
    no_delta = chunk({"finish_reason": "content_filter", "index": 0, "content_filter_results": FILTERS})
    _, out = run([role_frame(), no_delta, DONE], StreamPolicy(None, error_on_content_filter=False))
    assert chunks(out)[-1]["choices"][0]["delta"] == {}


def test_annotation_choice_is_removed_from_a_mixed_frame() -> None:
    mixed = frame(
        {
            "choices": [
                {
                    "index": 0,
                    "content_filter_offsets": {"check_offset": 1},
                    "content_filter_results": {},
                },
                {"index": 1, "delta": {"content": "b"}},
            ],
            "id": ID,
            "created": CREATED,
            "model": AZURE_MODEL,
            "object": "chat.completion.chunk",
        }
    )
    _, out = run([mixed, DONE])
    assert [c["index"] for c in chunks(out)[0]["choices"]] == [1]


def test_strip_azure_fields_removes_filter_results_everywhere() -> None:
    _, out = run(ASYNC_FILTER, StreamPolicy(client_model=None, keep_azure_fields=False))
    blob = out.decode()
    for key in ("content_filter_results", "content_filter_offsets", "prompt_filter_results"):
        assert key not in blob


def test_strip_azure_fields_on_usage_frame() -> None:
    with_filters = orjson.loads(usage_frame()[6:])
    with_filters["prompt_filter_results"] = PROMPT_FILTERS
    _, out = run([role_frame(), frame(with_filters), DONE], StreamPolicy(None, keep_azure_fields=False))
    assert "prompt_filter_results" not in chunks(out)[-1]


def test_done_is_emitted_exactly_once_and_later_bytes_are_ignored() -> None:
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model=None))
    out = normalizer.feed(role_frame() + DONE + delta("late") + DONE)
    assert out.count(b"[DONE]") == 1 and out.endswith(DONE)
    assert normalizer.feed(delta("later")) == b""
    assert normalizer.finish(upstream_failed="reset") == b""


def test_upstream_error_event_is_forwarded_and_no_second_error_is_added() -> None:
    upstream = frame({"error": {"message": "boom", "type": "server_error", "param": None, "code": None}})
    _, out = run([role_frame(), upstream])
    got = events(out)
    assert [e["error"]["message"] for e in got if isinstance(e, dict) and "error" in e] == ["boom"]
    assert got[-1] == "[DONE]"


def test_comments_non_json_and_non_object_data_are_dropped() -> None:
    normalizer, out = run(
        [
            b": keep-alive\n\n",
            b"data: not json\n\n",
            b"data: [1,2]\n\n",
            b"event: ping\n\n",
            *DEFAULT_FILTER,
        ]
    )
    assert len(chunks(out)) == 4
    assert normalizer.frames_in == 8


def test_frames_without_choices_or_usage_are_dropped() -> None:
    _, out = run([role_frame(), frame({"id": ID, "object": "chat.completion.chunk"}), DONE])
    assert len(chunks(out)) == 1


def test_crlf_frames_are_reframed_with_lf() -> None:
    crlf = [f.replace(b"\n\n", b"\r\n\r\n") for f in DEFAULT_FILTER]
    _, out = run(crlf, StreamPolicy(client_model=None))
    assert b"\r" not in out
    assert chunks(out) == chunks(run(DEFAULT_FILTER, StreamPolicy(client_model=None))[1])


def test_multi_line_data_is_reserialized_on_one_line() -> None:
    multi = b'data: {"choices":[{"delta":{"content":"a"},"index":0}],\ndata: "id":"x","created":1}\n\n'
    _, out = run([multi, DONE], StreamPolicy(client_model=None))
    first = out.split(b"\n\n")[0]
    assert first.count(b"\n") == 0 and orjson.loads(first[6:])["id"] == "x"


def test_nothing_at_all_is_a_cut_stream() -> None:
    _, out = run([])
    got = events(out)
    assert got[0]["error"]["code"] == "stream_interrupted" and got[1] == "[DONE]"


# ---- properties ----

RECORDED = [
    DEFAULT_FILTER,
    DEFAULT_WITH_USAGE,
    ASYNC_FILTER,
    PROMPT_ANNOTATIONS,
    TOOL_CALLS,
    FILTERED_MID_STREAM,
    CUT,
]
POLICIES = st.builds(
    StreamPolicy,
    client_model=st.sampled_from([None, "gpt-4o"]),
    keep_azure_fields=st.booleans(),
    strip_usage_frame=st.booleans(),
    error_on_content_filter=st.booleans(),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@given(st.sampled_from(RECORDED), POLICIES, st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_gives_identical_output(
    frames: list[bytes], policy: StreamPolicy, cuts: list[int]
) -> None:
    whole = b"".join(frames)
    assert run(_split(whole, cuts), policy)[1] == run([whole], policy)[1]


_frame_parts = st.sampled_from(
    [*{f for seq in RECORDED for f in seq}, b": c\n\n", b"data: {}\n\n", b"data: null\n\n", b"\r\n"]
)


@settings(max_examples=300)
@given(
    st.lists(st.one_of(_frame_parts, st.binary(max_size=40)), max_size=12),
    POLICIES,
    st.lists(st.integers(min_value=0), max_size=10),
)
def test_never_raises_and_always_yields_clean_openai_frames(
    parts: list[bytes], policy: StreamPolicy, cuts: list[int]
) -> None:
    whole = b"".join(parts)
    _, out = run(_split(whole, cuts), policy)
    got = events(out)
    assert got[-1] == "[DONE]" and got.count("[DONE]") == 1
    for payload in got[:-1]:
        assert isinstance(payload, dict)
        if "error" in payload:
            continue
        assert isinstance(payload["choices"], list)
        if payload["choices"]:
            first = payload["choices"][0]
            assert isinstance(first, dict) and ("delta" in first or "text" in first)
        else:
            assert "usage" in payload and not policy.strip_usage_frame


@given(st.lists(st.sampled_from([f for seq in RECORDED for f in seq]), max_size=10), POLICIES)
def test_structured_junk_mixes_never_leave_empty_choices_frames(
    frames: list[bytes], policy: StreamPolicy
) -> None:
    _, out = run(frames, policy)
    for payload in chunks(out):
        assert payload["choices"] or "usage" in payload


# ---- the openai SDK's own stream parser ----


def _sdk_stream(body: bytes) -> list[Any]:
    openai = pytest.importorskip("openai")
    httpx2 = pytest.importorskip("httpx2")

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.invalid/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    return list(stream)


def test_openai_sdk_reads_a_normalized_stream_with_usage() -> None:
    _, out = run(DEFAULT_WITH_USAGE)
    got = _sdk_stream(out)
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == (
        "The capital of France is Paris."
    )
    assert got[-1].usage.total_tokens == 23
    assert {c.model for c in got} == {"gpt-4o"}


def test_openai_sdk_raises_on_the_content_filter_error_event() -> None:
    openai = pytest.importorskip("openai")
    _, out = run(FILTERED_MID_STREAM)
    with pytest.raises(openai.APIError) as raised:
        _sdk_stream(out)
    assert raised.value.code == "content_filter"
    assert "content management policy" in raised.value.message


def test_openai_sdk_raises_on_a_cut_stream() -> None:
    openai = pytest.importorskip("openai")
    _, out = run(CUT, upstream_failed="connection reset")
    with pytest.raises(openai.APIError) as raised:
        _sdk_stream(out)
    assert raised.value.code == "stream_interrupted"
    assert "connection reset" in raised.value.message


def test_the_raw_azure_cut_stream_is_silent_in_the_sdk_which_is_why_we_exist() -> None:
    # Control for the test above: without the normalizer the SDK sees a clean end.
    assert len(_sdk_stream(b"".join(CUT[1:]))) == 2


class _GeneralPathOnly(ChatStreamNormalizer):
    def _steady_frame(self, event: Any, obj: dict[str, Any]) -> bytes | None:
        return None


_ANY_FRAME = st.sampled_from(
    [
        *{f for seq in RECORDED for f in seq},
        usage_frame(),
        chunk({"delta": {"content": "x"}, "index": 0}, usage=None),
        frame({"choices": [{"delta": {}, "index": 0}], "id": "other", "created": 1, "object": "x"}),
        frame({"choices": [{"delta": {}, "index": 0}], "id": ID, "created": CREATED, "model": ""}),
        frame(
            {
                "choices": [{"delta": {"content": "y"}, "index": 0}],
                "id": ID,
                "created": 0,
                "model": AZURE_MODEL,
                "object": "chat.completion.chunk",
            }
        ),
        frame({"error": {"message": "m"}, "choices": [{"delta": {}}]}),
    ]
)


@settings(max_examples=300)
@given(st.lists(_ANY_FRAME, max_size=12), POLICIES)
def test_the_hot_path_gives_exactly_what_the_general_path_gives(
    frames: list[bytes], policy: StreamPolicy
) -> None:
    fast = ChatStreamNormalizer(policy)
    general = _GeneralPathOnly(policy)
    for f in frames:
        assert fast.feed(f) == general.feed(f)
    assert fast.finish() == general.finish()
    assert (fast.usage, fast.finish_reasons, fast.frames_out) == (
        general.usage,
        general.finish_reasons,
        general.frames_out,
    )


def test_the_content_relayed_is_counted_for_estimates() -> None:
    """A running count of the characters of content relayed, on the steady path and the
    general one; a usage frame and an empty delta count nothing."""
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model=None))
    frames = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": ", world"}, "finish_reason": "stop"}]},
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 1, "completion_tokens": 3}},
    ]
    for frame in frames:
        normalizer.feed(b"data: " + orjson.dumps(frame) + b"\n\n")
    assert normalizer.content_chars == len("Hello, world")
    legacy = ChatStreamNormalizer(StreamPolicy(client_model=None))
    legacy.feed(b'data: {"id":"x","object":"text_completion","created":1,"model":"m",'
                b'"choices":[{"index":0,"text":"abc"}]}\n\n')
    assert legacy.content_chars == 3


def test_the_responses_meter_reads_usage_and_counts_deltas_across_chunk_splits() -> None:
    from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

    stream = (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hello"}\n\n'
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":", you"}\n\n'
        b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
        b'{"input_tokens":7,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1}}}}\n\n'
    )
    meter = ResponsesStreamMeter()
    for i in range(0, len(stream), 7):
        meter.feed(stream[i:i + 7])
    assert meter.content_chars == len("Hello, you")
    assert meter.usage == {"input_tokens": 7, "output_tokens": 3,
                           "output_tokens_details": {"reasoning_tokens": 1}}


def test_tool_call_refusal_and_reasoning_deltas_are_counted() -> None:
    """An abandoned tool-call stream is estimated from the arguments relayed, not 0."""
    normalizer = ChatStreamNormalizer(StreamPolicy(client_model=None))
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        {"content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"refusal": "No."},
        {"reasoning_content": "Think", "content": "Hi"},
    ]
    for d in deltas:
        normalizer.feed(b"data: " + orjson.dumps(
            {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": d}]}) + b"\n\n")
    assert normalizer.content_chars == len(
        'get_weather{"city": "Paris"}' + "f{}" + "No." + "ThinkHi")


def test_the_responses_meter_counts_function_call_and_refusal_deltas() -> None:
    from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

    meter = ResponsesStreamMeter()
    for kind, delta in (("function_call_arguments", '{"a":1}'), ("refusal", "No"),
                        ("reasoning_summary_text", "Hm"), ("audio", "AAAA")):
        meter.feed(b"event: response.%s.delta\ndata: " % kind.encode() + orjson.dumps(
            {"type": f"response.{kind}.delta", "delta": delta}) + b"\n\n")
    assert meter.content_chars == len('{"a":1}' + "No" + "Hm")


def test_the_responses_meter_claims_the_streams_ids_as_their_events_pass() -> None:
    """The response's id as soon as `response.created` is fed, each item's once, in
    order; an id that only appears inside generated text is no item of the stream."""
    from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

    def event(obj: dict[str, Any]) -> bytes:
        kind: str = obj["type"]
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"

    decoy = orjson.dumps({"type": "response.output_item.added", "item": {"id": "msg_x"}})
    message = {"id": "msg_1", "type": "message"}
    events = [
        event({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        event({"type": "response.in_progress", "response": {"id": "resp_1", "usage": None}}),
        event({"type": "response.output_item.added", "item": {"id": "rs_1", "type": "reasoning"}}),
        event({"type": "response.output_item.done", "item": {"id": "rs_1", "type": "reasoning"}}),
        event({"type": "response.output_item.added", "item": message}),
        event({"type": "response.output_text.delta", "item_id": "msg_1",
               "delta": decoy.decode()}),
        event({"type": "response.output_item.done", "item": message}),
        event({"type": "response.completed", "response": {
            "id": "resp_1", "output": [{"id": "rs_1"}, message, {"id": "fc_1"}],
            "usage": {"input_tokens": 1, "output_tokens": 2}}}),
    ]
    claimed: list[list[str]] = []
    meter = ResponsesStreamMeter(claimed.append)
    meter.feed(events[0][:20])
    assert claimed == []
    meter.feed(events[0][20:])
    assert claimed == [["resp_1"]] and meter.response_id == "resp_1"
    stream = b"".join(events[1:])
    for i in range(0, len(stream), 7):
        meter.feed(stream[i:i + 7])
    assert claimed == [["resp_1"], ["rs_1"], ["msg_1"], ["fc_1"]]
    assert meter.usage == {"input_tokens": 1, "output_tokens": 2}
    assert meter.content_chars == len(decoy.decode())


def test_the_responses_meter_hands_the_response_id_to_created_once() -> None:
    """For resource affinity: the response's id alone (never an item's), as soon as its
    `response.created` event is whole, without a claim set (a static key's stream)."""
    from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

    created: list[str] = []
    meter = ResponsesStreamMeter(created=created.append)
    first = (b'event: response.created\ndata: {"type":"response.created","response":'
             b'{"id":"resp_9","status":"in_progress"}}\n\n')
    meter.feed(first[:-1])
    assert created == []
    meter.feed(first[-1:])
    assert created == ["resp_9"]
    meter.feed(b'event: response.output_item.added\ndata: {"type":"response.output_item.added"'
               b',"item":{"id":"msg_1"}}\n\n' + first.replace(b"resp_9", b"resp_other"))
    assert created == ["resp_9"]


def test_a_stream_without_response_created_names_its_response_at_its_end() -> None:
    """A stream whose first event is not `response.created` (none comes) still hands its
    response's id to `created` and `claim` from the final event, before its items'; a
    later `response.created` of another id changes nothing. Before, it named none: no
    affinity, and the key did not own the response it was shown."""
    from azure_openai_proxy.normalize.responses_meter import ResponsesStreamMeter

    created: list[str] = []
    claimed: list[list[str]] = []
    meter = ResponsesStreamMeter(claimed.append, created=created.append)
    meter.feed(b'event: response.in_progress\ndata: {"type":"response.in_progress",'
               b'"response":{"id":"resp_7"}}\n\n')
    meter.feed(b'event: response.completed\ndata: ' + orjson.dumps(
        {"type": "response.completed", "response": {
            "id": "resp_7", "output": [{"id": "msg_7"}],
            "usage": {"input_tokens": 1, "output_tokens": 1}}}) + b"\n\n")
    assert created == ["resp_7"] and meter.response_id == "resp_7"
    assert claimed == [["resp_7"], ["msg_7"]]
    meter.feed(b'data: {"type":"response.created","response":{"id":"resp_8"}}\n\n')
    assert created == ["resp_7"]
