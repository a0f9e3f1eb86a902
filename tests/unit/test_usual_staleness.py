"""A usual key's `UsualLimits`, kept on its `Caller` (`Decided`) for as long as the
limiter's epoch stands, is decided anew when its subject is configured with other
limits inside that epoch: by a Realtime session planning with the `Caller` it opened
with, or by a request authenticated just before a reload and governed after it, both
holding the key's version from before an admin changed its limits."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import orjson

from azure_openai_proxy.gateway.app import GatewayApp
from azure_openai_proxy.gateway.realtime_limits import limit_plan
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.http.interface import Answer
from tests.unit.test_governed_usual import Clock, _Azure, _azure_answer, _Pair, _Request

_BODY = orjson.dumps({"model": "gpt-4o", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}]})


async def _send(app: GatewayApp, azure: _Azure, secret: str) -> Answer:
    task = asyncio.ensure_future(app(_Request(secret, _BODY)))
    for _ in range(1000):  # loop turns until it is at Azure or answered
        if task.done() or azure.waiting:
            break
        await asyncio.sleep(0)
    if azure.waiting:
        azure.waiting.pop().set_result(_azure_answer((1, 1), 200))
    answer = await task
    assert isinstance(answer, Answer)
    return answer


def _requests_limit(answer: Answer) -> str | None:
    for line in answer.head_lines.decode("latin-1").split("\r\n"):
        if line.startswith("x-ratelimit-limit-requests: "):
            return line.split(": ", 1)[1]
    return None


async def _after_an_old_plan(before: Limits, after: Limits) -> tuple[Answer, Answer]:
    """A key limited by `before`, a `Caller` opened with it, then its limits changed to
    `after`: the key's answer once decided on `after`, and its answer after the old
    `Caller` planned again (as its Realtime session's next response does)."""
    with tempfile.TemporaryDirectory() as directory:
        pair = _Pair(Path(directory), Clock())
        await pair.start()
        try:
            key, secret = pair.store.create_key("k", limits=before, now=pair.clock.now)
            await pair.reload()
            app, gateway = pair.apps[0], pair.apps[0].gateway
            assert gateway.directory is not None
            old = gateway.directory.authenticate(secret)
            pair.store.update_key(key.id, {"limits": after})
            await pair.reload()
            first = await _send(app, pair.azures[0], secret)
            limit_plan(gateway, old)  # the session's plan, on the key's old limits
            second = await _send(app, pair.azures[0], secret)
            return first, second
        finally:
            await pair.close()


def test_the_key_keeps_its_new_limits_after_an_old_callers_plan() -> None:
    first, second = asyncio.run(_after_an_old_plan(Limits(rpm=100, tpm=1000),
                                                   Limits(rpm=2, tpm=1000)))
    assert (first.status, _requests_limit(first)) == (200, "2")
    assert (second.status, _requests_limit(second)) == (200, "2")  # was 100


def test_an_old_version_without_an_rpm_leaves_the_usual_key_served() -> None:
    # The old version is not the usual plan (no RPM): the kept `UsualLimits` would take
    # on a subject without one (an assertion: a 500).
    first, second = asyncio.run(_after_an_old_plan(Limits(tpm=1000), Limits(rpm=5, tpm=1000)))
    assert (first.status, _requests_limit(first)) == (200, "5")
    assert (second.status, _requests_limit(second)) == (200, "5")
