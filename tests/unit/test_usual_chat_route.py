"""`Gateway._usual_chat` (the usual plain chat, sent and settled from `handle`) against
the route it shortens, `Gateway._governed`, and the general loop (`hold`/`release`):
three gateways over one key store and clock, one as shipped, one whose `_usual_chat`
always hands over to `_governed`, one whose limiter makes no usual plan. Over random
bodies (every top-level name a chat may carry, every message and `max_tokens` shape),
keys with and without an allow-list, Azure's answers (usage shapes, errors, a
timeout), clients that leave mid-request, waits, limit changes, rotations and
revocations, each request's answer, the access log's record of it (status, tokens,
estimated flag) and the limiter's state are alike."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.errors import UpstreamTimeout
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.observability.accesslog import AccessLog
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse
from tests.unit.test_governed_usual import (
    Clock,
    _Answer,
    _Azure,
    _GeneralLoop,
    _Pair,
    _Request,
    _seen,
)


class _Records(AccessLog):
    """Every record the gateway writes, as a line without what differs per run."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def write(self, record: RequestRecord) -> None:
        line = record.line()
        for name in ("request_id", "total_ms", "upstream_ms"):
            line.pop(name, None)
        self.lines.append(line)


class _Sent(_Azure):
    """`_Azure`, keeping what each request sent: its URL (the api-version) and body."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, object]] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        body = request.body
        self.sent.append((request.url, body if type(body) is bytes else type(body)))
        return await super().send(request)


_content = st.one_of(st.text(max_size=60), st.none(), st.integers(0, 3),
                     st.just([{"type": "text", "text": "z" * 90}]))
_message = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c}, st.text(max_size=400)),
    st.builds(lambda c: {"role": "user", "content": c}, _content),
    st.builds(lambda c: {"role": "user", "content": c, "name": "n"}, st.text(max_size=90)),
    st.just({"role": "user", "name": "x"}),
    st.just({"content": "abc", "name": "x"}),
    st.just(["role", "content"]), st.just("ro"), st.just(7), st.none(),
)
_count = st.one_of(st.integers(-2, 600), st.booleans(), st.just(2.5), st.just("5"), st.none())
_extra = st.fixed_dictionaries({}, optional={
    "max_tokens": _count, "max_completion_tokens": _count, "n": st.integers(1, 3),
    "best_of": st.integers(1, 3), "input": st.text(max_size=200),
    "prompt": st.text(max_size=200), "instructions": st.text(max_size=200),
    "temperature": st.just(0.5), "stream": st.just(False), "user": st.just("u"),
    "store": st.sampled_from([False, True, None]),
    "tools": st.just([{"type": "function", "function": {"name": "f"}}]),
    "Messages": st.just([{"role": "user", "content": "x"}]),
})
_any_body = st.builds(
    lambda model, messages, extra: {**({} if model is None else {"model": model}),
                                    **({} if messages is None else {"messages": messages}),
                                    **extra},
    st.sampled_from(["gpt-4o", "gpt-4o", "gpt-4o", "gpt-35", "nope", None]),
    st.one_of(st.lists(_message, max_size=3), st.lists(
        st.builds(lambda c: {"role": "user", "content": c}, st.text(max_size=200)),
        min_size=1, max_size=3), st.none(), st.just("hi")),
    _extra,
)
_plain = st.builds(lambda c: {"role": "user", "content": c}, st.text(max_size=400))
_plain_body = st.builds(
    lambda model, messages, extra: {"model": model, "messages": messages, **extra},
    st.sampled_from(["gpt-4o", "gpt-4o", "gpt-35"]), st.lists(_plain, max_size=3),
    st.fixed_dictionaries({}, optional={
        "max_tokens": st.one_of(st.integers(0, 600), st.integers(0, 600), _count),
        "temperature": st.just(0.5), "stream": st.just(False), "user": st.just("u"),
        "store": st.booleans()}))
_body = st.one_of(_plain_body, _plain_body, _any_body)
_usage = st.one_of(
    st.none(),
    st.tuples(st.integers(0, 500), st.integers(0, 500)).map(
        lambda u: {"prompt_tokens": u[0], "completion_tokens": u[1], "total_tokens": sum(u)}),
    st.just({"prompt_tokens": 30}), st.just({"prompt_tokens": -5, "completion_tokens": 2}),
    st.just({"prompt_tokens": 3.0, "completion_tokens": 2}),
    st.just({"input_tokens": 40, "output_tokens": 2}),
)
_limits = st.builds(Limits, rpm=st.integers(1, 8), tpm=st.integers(50, 6000),
                    max_parallel=st.sampled_from([None, None, None, 2]))
_steps = {
    "start": st.tuples(st.just("start"), st.integers(0, 1), st.sampled_from([0, 0, 0, 1]),
                       _body),
    "finish": st.tuples(st.just("finish"), _usage, st.sampled_from([200, 200, 200, 400, 0])),
    "leave": st.tuples(st.just("leave")),
    "wait": st.tuples(st.just("wait"), st.sampled_from([0.0, 0.25, 1.0, 7.5, 61.0])),
    "limits": st.tuples(st.just("limits"), st.integers(0, 1), _limits),
    "rotate": st.tuples(st.just("rotate"), st.integers(0, 1), st.sampled_from([0.0, 3600.0])),
    "revoke": st.tuples(st.just("revoke"), st.integers(0, 1)),
}
# Mostly requests and their answers: a key changes now and then.
_step = st.sampled_from(["start"] * 8 + ["finish"] * 4 + [
    "leave", "wait", "wait", "limits", "rotate", "revoke"]).flatmap(_steps.__getitem__)


def _answer(usage: dict[str, Any] | None, status: int) -> _Answer:
    if status != 200:
        return _Answer(status, orjson.dumps({"error": {"code": "bad", "message": "no"}}))
    answer: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}]}
    if usage is not None:
        answer["usage"] = usage
    return _Answer(200, orjson.dumps(answer))


class _Trio(_Pair):
    """The shipped gateway, one that never takes `_usual_chat`, one on the general loop
    (`_Pair`'s `reload` and `close`, for three)."""

    def __init__(self, directory: Path, clock: Clock) -> None:
        self.clock = clock
        self.store = KeyStore.open(directory / "gateway.db")
        deployment = {"endpoint": "http://127.0.0.1:9/", "api_key": "azure-key"}
        config = load_settings({
            "database": f"sqlite:///{directory}/gateway.db", "log_level": "warning",
            "deployment_config": [
                # one version that drops `store` (and `metadata`), one that sends it on
                {"deployment_name": "gpt-4o", "model_name": "gpt-4o",
                 "api_version": "2024-10-21", **deployment},
                {"deployment_name": "gpt-35", "model_name": "gpt-35",
                 "api_version": "2025-04-01-preview", **deployment}],
        }, {})
        self.azures = _Sent(), _Sent(), _Sent()
        self.logs = _Records(), _Records(), _Records()
        self.apps = tuple(create_app(config, azure, clock=clock, access_log=log)
                          for azure, log in zip(self.azures, self.logs, strict=True))
        governed = self.apps[1].gateway
        governed._usual_chat = lambda *args: None  # type: ignore[method-assign]
        general = self.apps[2].gateway
        assert general.directory is not None
        general.limiter = _GeneralLoop(clock)
        general.directory.on_reload = general.limiter.forget
        self.secrets: list[list[str]] = []
        self.ids: list[str] = []
        self.pending: list[tuple[asyncio.Task[object], ...]] = []

    async def start(self) -> None:
        for n, models in enumerate(((), ("gpt-4o",))):
            key, secret = self.store.create_key(
                f"k{n}", models=models, limits=Limits(rpm=5, tpm=5000), now=self.clock.now)
            self.ids.append(key.id)
            self.secrets.append([secret])
        for app in self.apps:
            await app.startup()

    def check(self) -> None:
        states = []
        for app in self.apps:
            assert app.gateway.limiter is not None
            states.append(app.gateway.limiter.snapshot())
        assert states[0] == states[1] == states[2]
        assert self.logs[0].lines == self.logs[1].lines == self.logs[2].lines
        # what Azure was sent, the same whichever way (`store` dropped or sent on alike)
        assert self.azures[0].sent == self.azures[1].sent == self.azures[2].sent

    async def request(self, key: int, which: int, body: dict[str, Any]) -> None:
        secrets = self.secrets[key]
        secret = secrets[-1 - which] if which < len(secrets) else secrets[-1]
        raw = orjson.dumps(body)
        tasks = []
        for app, azure in zip(self.apps, self.azures, strict=True):
            waiting = len(azure.waiting)
            task = asyncio.ensure_future(app(_Request(secret, raw)))
            for _ in range(1000):
                if task.done() or len(azure.waiting) > waiting:
                    break
                await asyncio.sleep(0)
            tasks.append(task)
        if all(task.done() for task in tasks):
            seen = [_seen(task.result()) for task in tasks]
            assert seen[0] == seen[1] == seen[2]
        else:
            assert not any(task.done() for task in tasks)
            self.pending.append(tuple(tasks))

    async def finish(self, usage: dict[str, Any] | None, status: int) -> None:
        if not self.pending:
            return
        tasks = self.pending.pop(0)
        for azure in self.azures:
            waiting = azure.waiting.pop(0)
            if status == 0:  # Azure never answered: not retried (it may have been sent)
                waiting.set_exception(UpstreamTimeout("no answer"))
            else:
                waiting.set_result(_answer(usage, status))
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        seen = [_seen(answer) for answer in answers]
        assert seen[0] == seen[1] == seen[2]

    async def leave(self) -> None:
        """The oldest pending request's client leaves (its handler is cancelled)."""
        if not self.pending:
            return
        tasks = self.pending.pop(0)
        for task, azure in zip(tasks, self.azures, strict=True):
            task.cancel()
            azure.waiting.pop(0).cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task

async def _run(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        trio = _Trio(Path(directory), Clock())
        await trio.start()
        try:
            revoked: set[int] = set()
            for step in steps:
                kind = step[0]
                if kind in ("limits", "rotate", "revoke") and step[1] in revoked:
                    continue
                if kind == "start":
                    await trio.request(step[1], step[2], step[3])
                elif kind == "finish":
                    await trio.finish(step[1], step[2])
                elif kind == "leave":
                    await trio.leave()
                elif kind == "wait":
                    trio.clock.now += step[1]
                elif kind == "limits":
                    trio.store.update_key(trio.ids[step[1]], {"limits": step[2]})
                    await trio.reload()
                elif kind == "rotate":
                    _, secret = trio.store.rotate_key(trio.ids[step[1]], grace_seconds=step[2],
                                                      now=time.time())
                    trio.secrets[step[1]].append(secret)
                    await trio.reload()
                else:
                    trio.store.delete_key(trio.ids[step[1]])
                    revoked.add(step[1])
                    await trio.reload()
                trio.check()
        finally:
            await trio.close()
        trio.check()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
# 200 examples of three gateways each: 29 s in a full run at a load average of 7, past the
# suite's 60 s timeout in a unit run at a load of 16 (it failed so, once). The timeout
# bounds a hang, it measures nothing: wide enough for a loaded machine.
# The slow step (.ci/run runs it): 40 s of a full run at a load of 11.
@pytest.mark.slow
@pytest.mark.timeout(300)
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_step, min_size=4, max_size=30))
def test_the_usual_chat_route_answers_records_and_limits_as_governed_and_general(
        steps: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run(steps))
