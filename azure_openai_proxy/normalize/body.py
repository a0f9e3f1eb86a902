"""Non-streamed response bodies (chat, completions, embeddings, responses) made OpenAI's.

`normalize_body` writes the client's model name back into `model` and keeps or strips
Azure's content-filter fields (top-level `prompt_filter_results`/`prompt_annotations`;
`content_filter_results`/`content_filter_offsets` on each choice, and on each image in
`data`). It returns the very same bytes object when nothing changes, without parsing
at all when the settings ask for no change, and never raises: junk goes back unchanged.
`normalize_answer` (the relay's) raises `AnswerNotJson` for junk instead: an answer an
OpenAI client would fail to parse (an HTML page, an empty or cut body) is not a 200.

With Azure's fields kept (the default) only the answer's top level is decoded, as keys
and raw values (msgspec's `Raw`, which validates the JSON it skips without building it):
the other values go back out byte for byte. Parsing a whole chat answer into Python
objects and encoding it again was the largest single cost of a relayed request; this
takes 40% less time per answer (`python -m bench.normalizer_bench`) and 6% fewer
instructions per relayed request.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import orjson

__all__ = ["AnswerNotJson", "normalize_answer", "normalize_body"]

_TOP_LEVEL_FIELDS = ("prompt_filter_results", "prompt_annotations")
_ITEM_FIELDS = ("content_filter_results", "content_filter_offsets", "prompt_filter_results")
_ITEM_LISTS = ("choices", "data")

_decode_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class AnswerNotJson(ValueError):
    """An answer that is not a JSON object (`normalize_answer`)."""


def normalize_body(body: bytes, *, client_model: str | None, keep_azure_fields: bool) -> bytes:
    """Return `body` with `model` = `client_model` (if set) and Azure fields kept or not."""
    if client_model is None and keep_azure_fields:
        return body
    if keep_azure_fields and b'"model"' not in body:
        return body
    try:
        return _rewrite(body, client_model, keep_azure_fields)[0]
    except AnswerNotJson:
        return body


def normalize_answer(
    body: bytes, *, client_model: str | None, keep_azure_fields: bool
) -> tuple[bytes, dict[str, Any] | None]:
    """`normalize_body` and the answer's `usage`, from one decode (the hot path's version);
    `AnswerNotJson` when the body is not a JSON object. Always decoded: with a model to
    restore it is anyway, and Azure's answers on these routes carry a usage to read."""
    return _rewrite(body, client_model, keep_azure_fields)


def _rewrite(
    body: bytes, client_model: str | None, keep_azure_fields: bool
) -> tuple[bytes, dict[str, Any] | None]:
    """Decode once: the rewritten body (the same object if unchanged) and its usage."""
    if not keep_azure_fields:
        return _rewrite_parsed(body, client_model)
    try:
        return _rewrite_top_level(body, client_model)
    except (ValueError, RecursionError):
        # Not JSON, not an object, invalid UTF-8 or a number no float holds in what
        # is decoded (msgspec's errors are ValueErrors), nesting past the decoder's
        # depth: a JSON object goes back as Azure sent it, anything else is junk.
        _check_object(body)
        return body, None


def _rewrite_top_level(
    body: bytes, client_model: str | None
) -> tuple[bytes, dict[str, Any] | None]:
    top = _decode_object(body)
    raw_usage = top.get("usage")
    # orjson, as everywhere else a usage is read: a count past 64 bits becomes a float,
    # which the access line and the metrics can always take.
    usage = orjson.loads(bytes(raw_usage)) if raw_usage is not None else None
    changed = False
    if client_model is not None:
        raw_model = top.get("model")
        model = _decode_any(raw_model) if raw_model is not None else None
        if isinstance(model, str) and model != client_model:
            top["model"] = msgspec.Raw(_encode(client_model))
            changed = True
    return (_encode(top) if changed else body), (usage if isinstance(usage, dict) else None)


def _rewrite_parsed(
    body: bytes, client_model: str | None
) -> tuple[bytes, dict[str, Any] | None]:
    """Azure's fields stripped too: fields nested in every choice change, so the whole
    answer is parsed (decoding each choice to keys and raw values measured slower)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        _check_object(body)
        return body, None
    if not isinstance(obj, dict):
        raise AnswerNotJson("not a JSON object")
    usage = obj.get("usage")
    changed = False
    if client_model is not None and isinstance(obj.get("model"), str):
        changed = obj["model"] != client_model
        obj["model"] = client_model
    changed = _strip(obj) or changed
    return (orjson.dumps(obj) if changed else body), (usage if isinstance(usage, dict) else None)


def _check_object(body: bytes) -> None:
    """Nothing if `body`, which a decoder here refused, is still a JSON object as a
    client's SDK reads one (Python's `json` over leniently decoded text: a number no
    float holds, invalid UTF-8, is one); `AnswerNotJson` if not. Only on that failure:
    Azure's answers never come here."""
    try:
        obj = json.loads(body.decode("utf-8", "replace"))
    except RecursionError:
        return  # nested past any decoder's depth: not ours to judge
    except ValueError:
        raise AnswerNotJson("not JSON") from None
    if not isinstance(obj, dict):
        raise AnswerNotJson("not a JSON object")


def _strip(obj: dict[str, Any]) -> bool:
    changed = False
    for key in _TOP_LEVEL_FIELDS:
        if key in obj:
            del obj[key]
            changed = True
    for list_key in _ITEM_LISTS:
        items = obj.get(list_key)
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, dict):
                for key in _ITEM_FIELDS:
                    if key in item:
                        del item[key]
                        changed = True
    return changed
