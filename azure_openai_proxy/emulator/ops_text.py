"""Handlers for the text operations: chat, legacy completions, embeddings, Responses.

Each validates with `validation`, plans with the pure generators, and answers
through the `Exchange` (JSON, or SSE when `stream` is true).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.emulator import frames, stored_chat, validation, wire_errors
from azure_openai_proxy.emulator.config import (
    EmulatedDeployment,
    input_limit,
    max_output_tokens,
)
from azure_openai_proxy.emulator.exchange import Exchange, new_id
from azure_openai_proxy.emulator.generation import (
    RequestFacts,
    check_prompt_filter,
    plan_chat,
    plan_completions,
    prompt_list,
)
from azure_openai_proxy.emulator.responses_api import (
    input_items,
    input_text,
    plan_response,
    response_events,
    response_object,
)
from azure_openai_proxy.emulator.responses_image import image_call
from azure_openai_proxy.emulator.textgen import (
    chat_prompt_tokens,
    count_tokens,
    embedding_vector,
    float32_base64,
    shortened,
)

NATIVE_DIMENSIONS = {"text-embedding-3-large": 3072}
_DEFAULT_DIMENSIONS = 1536
MAX_INPUTS = 2048


def facts(ex: Exchange) -> RequestFacts:
    assert ex.deployment is not None and ex.version is not None
    return RequestFacts(
        deployment=ex.deployment,
        request_id=ex.request_id.replace("-", "")[:29],
        created=ex.created,
        filter_key=ex.version.filter_results_key,
        natural_tokens=ex.config.completion_tokens,
    )


async def chat(ex: Exchange) -> web.StreamResponse:
    assert ex.deployment is not None and ex.version is not None
    validation.check_chat(ex.body, ex.version, ex.deployment.model, ex.deployment.reasoning)
    # The window first: gpt-4.1 with max_tokens 1,000,000 (past its 32,768) and 124,171
    # prompt tokens got context_length_exceeded (azure-sdk-for-python#40986), not "too large".
    tokens = chat_prompt_tokens(ex.body["messages"])  # counted once: the whole prompt's text
    validation.check_context(tokens, ex.body, ex.deployment.context_tokens, chat=True,
                             most_input=input_limit(ex.deployment.model))
    validation.check_max_tokens(ex.body, max_output_tokens(ex.deployment.model))
    plan = plan_chat(ex.body, facts(ex), tokens)
    answer = frames.chat_body(plan)
    stored_chat.keep(ex, answer)  # with `store: true`, streamed or not
    if ex.body.get("stream"):
        stream = frames.chat_stream(plan, ex.config.burst_tokens)
        return await ex.stream((f.encode(), f.tokens) for f in stream)
    await ex.think(plan.completion_tokens)
    return ex.json(answer)


async def completions(ex: Exchange) -> web.StreamResponse:
    assert ex.deployment is not None and ex.version is not None
    validation.check_completions(ex.body, ex.version)
    prompts = prompt_list(ex.body.get("prompt", "<|endoftext|>"))
    for _, tokens in prompts:
        validation.check_context(tokens, ex.body, ex.deployment.context_tokens, chat=False)
    plan = plan_completions(ex.body, facts(ex), prompts)
    if ex.body.get("stream"):
        stream = frames.completions_stream(plan, ex.config.burst_tokens)
        return await ex.stream((f.encode(), f.tokens) for f in stream)
    await ex.think(plan.completion_tokens)
    return ex.json(frames.completions_body(plan))


def embedding_inputs(value: object) -> list[tuple[str, int]]:
    """(text, tokens) per input: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = list(value)
    else:
        raise wire_errors.invalid_request(
            "'$.input' is invalid. Please check the API reference: "
            "https://platform.openai.com/docs/api-reference.", "input",
        )
    if len(items) > MAX_INPUTS:
        raise wire_errors.invalid_request(
            f"Too many inputs. The max number of inputs is {MAX_INPUTS}.", "input"
        )
    out = []
    for item in items:
        if isinstance(item, str) and item:
            out.append((item, count_tokens(item)))
        elif isinstance(item, list) and item and all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            raise wire_errors.invalid_request(
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.", "input",
            )
    return out


def embeddings_body(body: Mapping[str, Any], deployment: EmulatedDeployment) -> dict[str, Any]:
    """The embeddings list for a validated request body. Pure."""
    inputs = embedding_inputs(body.get("input"))
    native = NATIVE_DIMENSIONS.get(deployment.model, _DEFAULT_DIMENSIONS)
    dims = body.get("dimensions")
    if dims is not None:
        if "text-embedding-3" not in deployment.model:
            raise wire_errors.invalid_request(
                "This model does not support specifying dimensions.", "dimensions"
            )
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= native:
            raise wire_errors.invalid_request(
                f"Invalid value for 'dimensions' = {dims}. Must be between 1 and {native}.",
                "dimensions", "invalid_value",
            )
    base64 = body.get("encoding_format") == "base64"
    data = []
    for index, (text, _) in enumerate(inputs):
        vector = embedding_vector(text, native)
        if dims is not None and dims != native:
            vector = shortened(vector, dims)
        encoded: Any = float32_base64(vector) if base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(count for _, count in inputs)
    return {"object": "list", "data": data, "model": deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def embeddings(ex: Exchange) -> web.StreamResponse:
    assert ex.deployment is not None and ex.version is not None
    validation.check_embeddings(ex.body, ex.version)
    check_prompt_filter("\n".join(text for text, _ in embedding_inputs(ex.body.get("input"))))
    body = embeddings_body(ex.body, ex.deployment)
    await ex.think(0)
    return ex.json(body)


async def responses_create(ex: Exchange) -> web.StreamResponse:
    assert ex.deployment is not None and ex.version is not None
    if "input" not in ex.body:
        raise validation.missing("input", ex.version)
    reasoning = ex.body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):  # Azure: a 400, not a 500
        raise validation.invalid_type("reasoning", "an object", reasoning)
    image = image_call(ex.body, ex.request.headers, ex.config, input_text(ex.body))
    plan = plan_response(ex.body, ex.deployment, new_id("resp_"), ex.created,
                         ex.config.completion_tokens, image)
    final = response_object(plan)
    background = final["background"]
    if ex.body.get("store", True) or background:
        ex.state.stores.responses[plan.id] = final
        ex.state.stores.response_inputs[plan.id] = input_items(ex.body, plan.id)
    if ex.body.get("stream"):
        events = [(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n",
                   tokens) for e, tokens in response_events(plan, ex.config.burst_tokens)]
        if background:  # a client may resume it: GET responses/{id}?stream=true
            ex.state.stores.response_events[plan.id] = events
        return await ex.stream(events)
    if background:  # answered at once, queued: its first read finds it done
        ex.state.stores.queued.add(plan.id)
        return ex.json(response_object(plan, status="queued"))
    await ex.think(final["usage"]["output_tokens"])
    return ex.json(final)
