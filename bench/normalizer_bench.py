"""Micro-benchmark (not a test): cost per frame of SSE decoding and stream normalization,
and per answer of non-streamed body normalization.

Run: python -m bench.normalizer_bench [--frames 200] [--repeat 7]
     PYTHONHASHSEED=0 python -m bench.normalizer_bench --count   # callgrind, instructions

`--count` runs callgrind over whole streams fed as the pushed relay feeds them
(`gateway/relay.py`'s `_StreamPush`: each frame to the normalizer's shortcuts first,
else to `feed()`, then `shortcuts()` asked again), `bench/inprocess_stream.py`'s
recorded-shape frames, the client's model written and the usage frame hidden (the
gateway's usual stream): 100 and 300 streams, so the difference / 200 is one stream's
instructions, interpreter start-up and imports left out; with `--frames` 1 (the
frames a stream's first learn from) and 51 (per added content frame, its annotation
frames included).

The stream is what Azure sends for a chat answer with the default content filter: the
empty-choices prompt-filter frame, a role frame, N content frames each carrying
`content_filter_results`, a finish frame, a usage frame and `[DONE]`, one frame per
network chunk (the worst case for per-call overhead). Prints the best of `--repeat`
runs in nanoseconds per upstream frame. The body is the benchmark upstream's chat answer
(`bench/systems.py`), in nanoseconds per answer.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import orjson

from azure_openai_proxy.normalize.body import normalize_answer
from azure_openai_proxy.normalize.stream import ChatStreamNormalizer, StreamPolicy
from azure_openai_proxy.sse import SseDecoder
from bench.callgrind import module_total
from bench.systems import AZURE_ANSWER

_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_HEAD = {
    "created": 1727000000,
    "id": "chatcmpl-AzBench0001",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion.chunk",
    "system_fingerprint": "fp_5b26d85e12",
}


def _frame(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _choice(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    filters = {} if finish or "role" in delta else _FILTERS
    return {
        "content_filter_results": filters,
        "delta": delta,
        "finish_reason": finish,
        "index": 0,
        "logprobs": None,
    }


def azure_stream(frames: int) -> list[bytes]:
    prompt = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}],
    }
    out = [_frame(prompt), _frame({"choices": [_choice({"role": "assistant", "content": ""})], **_HEAD})]
    out += [
        _frame({"choices": [_choice({"content": f" token{i} and more"})], **_HEAD}) for i in range(frames)
    ]
    out.append(_frame({"choices": [_choice({}, "stop")], **_HEAD}))
    usage = {"completion_tokens": frames, "prompt_tokens": 20, "total_tokens": frames + 20}
    out.append(_frame({"choices": [], **_HEAD, "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return out


def _decode(chunks: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        decoder = SseDecoder()
        for chunk in chunks:
            decoder.feed(chunk)
        return decoder.flush()

    return run


def _normalize(chunks: list[bytes], policy: StreamPolicy) -> Callable[[], object]:
    def run() -> object:
        normalizer = ChatStreamNormalizer(policy)
        for chunk in chunks:
            normalizer.feed(chunk)
        return normalizer.finish()

    return run


def _parse_only(chunks: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        return [orjson.loads(c[6:]) for c in chunks[:-1]]

    return run


def relay_streams(streams: int, frames: int) -> int:
    """`streams` streams of `frames` content frames, fed as `_StreamPush` feeds them;
    the bytes written to the clients."""
    from bench.inprocess_stream import azure_frames

    chunks = azure_frames(frames)
    policy = StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)
    written = 0
    for _ in range(streams):
        normalizer = ChatStreamNormalizer(policy)
        steady = drop = None
        for chunk in chunks:
            if steady is not None:
                relayed = steady(chunk)
                if relayed is not None:
                    written += len(relayed)
                    continue
                if drop is not None and drop(chunk):
                    continue
            written += len(normalizer.feed(chunk))
            steady, drop = normalizer.shortcuts()
        written += len(normalizer.finish())
    return written


def _callgrind_total(streams: int, frames: int) -> int:
    return module_total("bench.normalizer_bench", "--relay-streams", str(streams),
                        "--frames", str(frames))


def count() -> None:
    """Instructions per stream (1 content frame) and per added content frame."""
    per_stream = {}
    for frames in (1, 51):
        low, high = (_callgrind_total(n, frames) for n in (100, 300))
        per_stream[frames] = (high - low) / 200
        print(f"a stream of {frames} content frame(s): {per_stream[frames]:,.0f} instructions")
    print(f"per added content frame: {(per_stream[51] - per_stream[1]) / 50:,.0f} instructions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=200, help="content frames per stream")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--count", action="store_true",
                        help="callgrind: instructions per stream and per added frame")
    parser.add_argument("--relay-streams", type=int, default=0,
                        help="relay this many streams and exit (what --count runs)")
    args = parser.parse_args()
    if args.count:
        count()
        return
    if args.relay_streams:
        print(relay_streams(args.relay_streams, args.frames))
        return
    chunks = azure_stream(args.frames)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads only (reference)", _parse_only(chunks)),
        ("SSE decode", _decode(chunks)),
        ("SSE decode, whole stream in one chunk", _decode([b"".join(chunks)])),
        ("normalize: Azure model kept (raw forwarding)", _normalize(chunks, StreamPolicy(client_model=None))),
        (
            "normalize: client model written (re-serialised)",
            _normalize(chunks, StreamPolicy(client_model="gpt-4o", strip_usage_frame=True)),
        ),
        (
            "normalize: client model + Azure fields stripped",
            _normalize(chunks, StreamPolicy(client_model="gpt-4o", keep_azure_fields=False)),
        ),
    ]
    print(f"{len(chunks)} upstream frames per stream, one chunk each; best of {args.repeat}")
    for name, fn in cases:
        loops = max(1, 20000 // len(chunks))
        best = min(timeit.repeat(fn, number=loops, repeat=args.repeat)) / loops
        print(f"  {name:<50} {best / len(chunks) * 1e9:8.0f} ns/frame")
    answer = orjson.dumps(AZURE_ANSWER)
    bodies: list[tuple[str, Callable[[], object]]] = [
        ("orjson.loads + dumps (reference)", lambda: orjson.dumps(orjson.loads(answer))),
        ("client model written, usage read", lambda: normalize_answer(
            answer, client_model="gpt-4o", keep_azure_fields=True)),
        ("client model written, Azure fields stripped", lambda: normalize_answer(
            answer, client_model="gpt-4o", keep_azure_fields=False)),
    ]
    print(f"non-streamed chat answer, {len(answer)} bytes; best of {args.repeat}")
    for name, fn in bodies:
        best = min(timeit.repeat(fn, number=20000, repeat=args.repeat)) / 20000
        print(f"  {name:<50} {best * 1e9:8.0f} ns/answer")


if __name__ == "__main__":
    main()
