"""The usual plain chat of a usual virtual key (`Gateway._usual_chat`, sent and settled
from `handle`) end to end against the route it shortens (`_governed`): the same
gateway, once as shipped and once with `_usual_chat` handing every request to
`_governed`, over the emulator, through the same sequence (a whole answer, a stream
read to its end, a stream the client leaves, Azure's 400, a stream cut by Azure).
After each, every request is settled (nothing in flight) and the records say the
same (status, stream, estimated or not, tokens)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import Emulator, emulator_config
from tests.e2e.test_virtual_keys import Governed, chat, governed_gateway
from tests.support import ServerThread, serve
from tests.waiting import until


class _Lines:
    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def write(self, record: RequestRecord) -> None:
        self.records.append(record)

    def flush(self) -> None:
        pass


def _settled(governed: Governed, key_id: str) -> bool:
    async def ask() -> bool:
        limiter = governed.server.app.gateway.limiter
        state = limiter.snapshot().get("key:" + key_id)
        return state is not None and state["in_flight"] == 0

    return bool(governed.server.call(ask))


def _sequence(governed: Governed, emulator: Emulator, short: bool) -> list[tuple[Any, ...]]:
    lines = _Lines()
    taken: list[bool] = []

    async def arrange() -> None:
        app = governed.server.app
        app.access_log = lines
        gateway = app.gateway
        usual = gateway._usual_chat

        def counted(*args: Any) -> Any:
            chosen = usual(*args) if short else None
            taken.append(chosen is not None)
            return chosen

        gateway._usual_chat = counted

    governed.server.call(arrange)
    key_id, secret = governed.key("usual", limits=Limits(rpm=1000, tpm=1_000_000))
    client = governed.client(secret)
    assert chat(client, max_tokens=5).choices  # decides the key: `_governed`
    assert chat(client, max_tokens=7).choices
    until(lambda: _settled(governed, key_id), timeout=10, message="not settled")
    stream = chat(client, stream=True, max_tokens=30, stream_options={"include_usage": True})
    assert list(stream)
    until(lambda: _settled(governed, key_id), timeout=10, message="not settled")
    stream = chat(client, stream=True, max_tokens=200)
    next(iter(stream))
    stream.close()  # the client leaves mid-stream
    until(lambda: _settled(governed, key_id), timeout=10,
          message="the stream the client left was never settled")
    with pytest.raises(openai.BadRequestError):
        chat(client, max_tokens=-1)
    until(lambda: _settled(governed, key_id), timeout=10, message="not settled")
    emulator.fault("gpt-4o", "cut", after_frames=2)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(chat(client, stream=True, max_tokens=50))
    until(lambda: _settled(governed, key_id), timeout=10, message="a cut stream never settled")
    until(lambda: len(lines.records) >= 6, timeout=10, message="records missing")
    time.sleep(0.2)
    assert taken and taken[0] is False
    if short:
        assert all(taken[1:]), taken  # every later request took `_usual_chat`
    usage = [(r.status, r.stream, r.route, r.key_id is not None,
              None if r.usage is None else (r.usage.get("estimated", False),
                                            r.usage.get("prompt_tokens")))
             for r in lines.records]
    return usage


def test_the_usual_chat_route_settles_and_records_as_governed(
        tmp_path: Path, start_gateway: Callable[[Settings], ServerThread]) -> None:
    results = []
    for short in (True, False):
        slow = serve(lambda: create_emulator_app(emulator_config(token_ms=20)))
        with slow as server:
            emulator = Emulator(server)
            path = tmp_path / ("short" if short else "governed")
            with governed_gateway(path, emulator.url, start_gateway) as governed:
                results.append(_sequence(governed, emulator, short))
    assert results[0] == results[1]
    statuses = [line[0] for line in results[0]]
    assert 400 in statuses and 200 in statuses
    assert any(line[4] is not None and line[4][0] for line in results[0])  # estimated
