"""A usual virtual key's requests (one subject with an RPM and a TPM limit, no parallel
limit, no budget, one worker) take the limiter's short path in `Gateway._governed`:
the key version's `UsualLimits`, decided once and kept on its `Caller` (`Decided`),
with no `hold`/`release`. Over random sequences of requests (some left in flight,
settled later with Azure's usage, none, or an error), waits, limit changes, rotations,
revocations and reloads, two gateways over the same key store and clock answer alike:
one as shipped, one whose limiter makes no usual plan (`_GeneralLoop`): it holds and
releases every request (`hold`/`release`) and takes on the limiter's general loop."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import LimitPlan, RateLimiter
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from azure_openai_proxy.upstream.transport import UpstreamRequest, UpstreamResponse


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Answer:
    """Azure's answer to one chat request: its usage as the step said."""

    def __init__(self, status: int, body: bytes) -> None:
        self._status, self._body = status, body

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return {"content-type": "application/json", "x-ratelimit-remaining-tokens": "7",
                "content-length": str(len(self._body))}

    async def read(self, limit: int) -> bytes:
        return self._body

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        yield self._body

    def close(self) -> None:
        pass

    def finish_in_background(self) -> None:
        pass


class _Azure:
    """An upstream as a function: each request waits for its answer (`answer`)."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[UpstreamResponse]] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        answer: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()
        self.waiting.append(answer)
        return await answer

    def connections_in_use(self) -> int:
        return 0

    async def close(self) -> None:
        pass


def _azure_answer(usage: tuple[int, int] | None, status: int) -> _Answer:
    if status != 200:
        return _Answer(status, orjson.dumps({"error": {"code": "bad", "message": "no"}}))
    answer: dict[str, Any] = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}]}
    if usage is not None:
        answer["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                           "total_tokens": sum(usage)}
    return _Answer(200, orjson.dumps(answer))


class _GeneralLoop(RateLimiter):
    """A limiter whose plans all take the general loop (`take`'s loop over subjects, no
    `UsualLimits`): the gateway then holds and releases every request (`hold`)."""

    def plan(self, key_id: str, key_limits: Limits, team_id: str | None,
             team_limits: Limits | None) -> LimitPlan:
        plan = super().plan(key_id, key_limits, team_id, team_limits)
        plan.only = plan.usual = None
        return plan


class _Request:
    def __init__(self, secret: str, body: bytes) -> None:
        self.method = "POST"
        self.target = "/v1/chat/completions"
        self.headers = CIMultiDictProxy(CIMultiDict({
            "Authorization": "Bearer " + secret, "Content-Type": "application/json",
            "Content-Length": str(len(body))}))
        self.content_length: int | None = len(body)
        self.extra_headers: dict[str, str] | None = None
        self._body = body

    @property
    def path(self) -> str:
        return self.target

    @property
    def query_string(self) -> str:
        return ""

    @property
    def has_body(self) -> bool:
        return True

    @property
    def peer(self) -> str | None:
        return "127.0.0.1"

    async def read(self, limit: int) -> bytes:
        return self._body

    async def body_chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def stream(self, status: int, headers: Mapping[str, str]) -> Any:
        raise AssertionError("not a stream")


_limits = st.builds(Limits, rpm=st.integers(1, 8), tpm=st.integers(50, 3000),
                    max_parallel=st.sampled_from([None, None, None, None, 2]))
_message = st.sampled_from([
    {"role": "user", "content": "x" * 40},
    {"role": "user", "content": ""},
    {"role": "system", "content": "y" * 333},
    {"role": "user", "content": [{"type": "text", "text": "z" * 90}]},  # not the plain one
])
_body = st.fixed_dictionaries({"messages": st.lists(_message, min_size=1, max_size=3)},
                              optional={"max_tokens": st.integers(0, 400),
                                        "n": st.integers(1, 2)})
_step = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 1), st.integers(0, 1), _body),
    st.tuples(st.just("finish"),
              st.one_of(st.none(), st.tuples(st.integers(0, 500), st.integers(0, 500))),
              st.sampled_from([200, 200, 200, 400])),  # 400: not retried
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.25, 1.0, 7.5, 61.0])),
    st.tuples(st.just("limits"), st.integers(0, 1), _limits),
    st.tuples(st.just("rotate"), st.integers(0, 1), st.sampled_from([0.0, 3600.0])),
    st.tuples(st.just("revoke"), st.integers(0, 1)),
    st.tuples(st.just("reload")),
)


def _seen(answer: object) -> tuple[object, ...]:
    """What a client sees of an answer, but the request id."""
    assert isinstance(answer, Answer)
    headers = {k.lower(): v for k, v in answer.headers.items() if k.lower() != "x-request-id"}
    body = orjson.loads(answer.body) if answer.body else None
    return answer.status, sorted(headers.items()), answer.head_lines, body


def one_deployment_settings(directory: Path) -> Settings:
    """A gateway with its key database in `directory` and one deployment, gpt-4o. Its
    usage ledger is the thread writer: these tests read no record, and the default
    journal writer starts a child process per gateway (twice per Hypothesis example
    here: ~28 ms of CPU each, about half an example's), whose own tests are
    tests/unit/test_ledger_journal*.py and tests/e2e/test_ledger*.py."""
    return load_settings({
        "database": f"sqlite:///{directory}/gateway.db", "log_level": "warning",
        "ledger_writer": "thread",
        "deployment_config": [{
            "deployment_name": "gpt-4o", "model_name": "gpt-4o",
            "endpoint": "http://127.0.0.1:9/", "api_key": "azure-key",
            "api_version": "2024-10-21"}],
    }, {})


class _Pair:
    """The shipped gateway and the general path's twin, over one store and clock."""

    def __init__(self, directory: Path, clock: Clock) -> None:
        self.clock = clock
        self.store = KeyStore.open(directory / "gateway.db")
        config = one_deployment_settings(directory)
        self.azures = _Azure(), _Azure()
        self.apps = (create_app(config, self.azures[0], clock=clock),
                     create_app(config, self.azures[1], clock=clock))
        general = self.apps[1].gateway
        assert general.directory is not None
        general.limiter = _GeneralLoop(clock)
        general.directory.on_reload = general.limiter.forget
        self.secrets: list[list[str]] = []  # per key: its secrets, newest last
        self.ids: list[str] = []
        self.pending: list[tuple[asyncio.Task[object], asyncio.Task[object]]] = []

    async def start(self) -> None:
        for n in range(2):
            key, secret = self.store.create_key(
                f"k{n}", limits=Limits(rpm=5, tpm=1000), now=self.clock.now)
            self.ids.append(key.id)
            self.secrets.append([secret])
        for app in self.apps:
            await app.startup()

    async def reload(self) -> None:
        for app in self.apps:
            assert app.gateway.directory is not None
            await app.gateway.directory.refresh(force=True)

    async def request(self, key: int, which: int, body: dict[str, Any]) -> None:
        secrets = self.secrets[key]
        secret = secrets[-1 - which] if which < len(secrets) else secrets[-1]
        raw = orjson.dumps({"model": "gpt-4o", **body})
        tasks = []
        for app, azure in zip(self.apps, self.azures, strict=True):
            waiting = len(azure.waiting)
            task = asyncio.ensure_future(app(_Request(secret, raw)))
            for _ in range(1000):  # loop turns until it is at Azure or answered (401, 429)
                if task.done() or len(azure.waiting) > waiting:
                    break
                await asyncio.sleep(0)
            tasks.append(task)
        if all(task.done() for task in tasks):
            assert _seen(tasks[0].result()) == _seen(tasks[1].result())
        else:
            assert not any(task.done() for task in tasks)
            self.pending.append((tasks[0], tasks[1]))

    async def finish(self, usage: tuple[int, int] | None, status: int) -> None:
        if not self.pending:
            return
        tasks = self.pending.pop(0)
        for azure in self.azures:
            azure.waiting.pop(0).set_result(_azure_answer(usage, status))
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 30)  # a hang fails
        assert _seen(answers[0]) == _seen(answers[1])

    def limits_state(self) -> tuple[object, object]:
        states = []
        for app in self.apps:
            assert app.gateway.limiter is not None
            states.append(app.gateway.limiter.snapshot())
        return states[0], states[1]

    async def close(self) -> None:
        while self.pending:
            await self.finish(None, 200)
        for app in self.apps:
            await app.shutdown()
            await app.cleanup()
        self.store.close()


async def _run(steps: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        pair = _Pair(Path(directory), Clock())
        await pair.start()
        try:
            revoked: set[int] = set()
            for step in steps:
                kind = step[0]
                if kind in ("limits", "rotate", "revoke") and step[1] in revoked:
                    continue  # no key to change: its requests stay refused
                if kind == "start":
                    await pair.request(step[1], step[2], step[3])
                elif kind == "finish":
                    await pair.finish(step[1], step[2])
                elif kind == "wait":
                    pair.clock.now += step[1]
                elif kind == "limits":
                    pair.store.update_key(pair.ids[step[1]], {"limits": step[2]})
                    await pair.reload()
                elif kind == "rotate":
                    # The grace's end is on the key directory's clock (time.time): an
                    # hour, or none.
                    _, secret = pair.store.rotate_key(pair.ids[step[1]], grace_seconds=step[2],
                                                      now=time.time())
                    pair.secrets[step[1]].append(secret)
                    await pair.reload()
                elif kind == "revoke":
                    pair.store.delete_key(pair.ids[step[1]])
                    revoked.add(step[1])
                    await pair.reload()
                else:
                    await pair.reload()
                short, general = pair.limits_state()
                assert short == general
        finally:
            await pair.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
# 150 examples of two gateways each: 35 s alone, past the suite's 60 s timeout on a busy
# machine. The timeout bounds a hang, it measures nothing: wide enough for a loaded one.
@pytest.mark.timeout(300)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_step, min_size=1, max_size=30))
def test_the_usual_keys_short_path_answers_as_the_general_path(
        steps: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run(steps))


def test_the_usual_key_takes_the_short_path_and_a_changed_key_is_decided_anew() -> None:
    """The shipped gateway's usual key does take the short path (else the comparison
    above would compare the general path with itself), and a reload's new version of
    the key (its limits changed to a parallel limit) is decided again: general."""

    async def run() -> None:
        with tempfile.TemporaryDirectory() as directory:
            pair = _Pair(Path(directory), Clock())
            await pair.start()
            try:
                await pair.request(0, 0, {"messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 5})
                directory_ = pair.apps[0].gateway.directory
                assert directory_ is not None
                caller = directory_.authenticate(pair.secrets[0][0])
                assert caller.decided is not None and caller.decided.usual is not None
                await pair.finish((1, 1), 200)
                pair.store.update_key(pair.ids[0], {"limits": Limits(rpm=5, tpm=1000,
                                                                     max_parallel=3)})
                await pair.reload()
                await pair.request(0, 0, {"messages": [], "max_tokens": 5})
                caller = directory_.authenticate(pair.secrets[0][0])
                assert caller.decided is not None and caller.decided.usual is None
                assert caller.decided.epoch is not None
            finally:
                await pair.close()

    asyncio.run(run())


def test_a_plain_chat_of_a_decided_usual_key_is_sent_without_governed() -> None:
    """The shipped gateway sends a plain chat of a usual key decided for this epoch from
    `handle` (`_usual_chat`), so the comparison above compares that path: `_governed`
    runs for the request that decides the key and for a chat that is not plain."""

    async def run() -> None:
        with tempfile.TemporaryDirectory() as directory:
            pair = _Pair(Path(directory), Clock())
            await pair.start()
            try:
                gateway = pair.apps[0].gateway
                governed = gateway._governed
                calls: list[object] = []

                async def counted(*args: Any) -> Any:
                    calls.append(args)
                    return await governed(*args)

                gateway._governed = counted  # type: ignore[method-assign]
                plain = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
                for body in (plain, plain, {"messages": [{"role": "user", "content": [
                        {"type": "text", "text": "hi"}]}], "max_tokens": 5}, plain):
                    await pair.request(0, 0, body)
                    await pair.finish((1, 1), 200)
                assert len(calls) == 2
            finally:
                await pair.close()

    asyncio.run(run())
