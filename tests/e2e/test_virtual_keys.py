"""Virtual keys end to end: the official `openai` SDK through the gateway to the
emulator, with keys written to the same SQLite database the CLI and admin API use."""

from __future__ import annotations

import io
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import CLIENT_KEY, Emulator, emulator_config, gateway_settings
from tests.support import ServerThread, load_keys_now, serve, silent_wav
from tests.waiting import until

ADMIN_KEY = "admin-key-for-tests-abcdef"
HELLO: Any = [{"role": "user", "content": "hello"}]


@dataclass
class Governed:
    server: ServerThread
    database: Path
    store: KeyStore

    def client(self, key: str, max_retries: int = 0) -> OpenAI:
        return OpenAI(base_url=self.server.url + "/v1", api_key=key, max_retries=max_retries,
                      timeout=30)

    def known(self, secret: str) -> str:
        """Wait until the gateway has loaded the key (it polls the store). Asked of its
        key directory, not with a request: every request counts against the key's RPM."""
        until(lambda: self._loaded(secret), timeout=10,
              message="the gateway never loaded the new key")
        return secret

    def _loaded(self, secret: str) -> bool:
        async def ask() -> bool:
            directory = self.server.app.gateway.directory
            try:
                directory.authenticate(secret)
            except AuthenticationFailed:
                return False
            return True

        return bool(self.server.call(ask))

    def key(self, name: str, **fields: Any) -> tuple[str, str]:
        key, secret = self.store.create_key(name, now=time.time(), **fields)
        load_keys_now(self.server)  # not the next poll's (up to 0.5 s a key)
        return key.id, self.known(secret)


def _status(url: str, secret: str) -> int:
    return httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code


@contextmanager
def governed_gateway(tmp_path: Path, emulator_url: str,
                     start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    database = tmp_path / "data" / "gateway.db"
    settings = gateway_settings(emulator_url, database=f"sqlite://{database}",
                                admin_key=ADMIN_KEY)
    server = start_gateway(settings)
    store = KeyStore.open(database)
    try:
        yield Governed(server, database, store)
    finally:
        store.close()


@pytest.fixture
def governed(tmp_path: Path, emulator: Emulator,
             start_gateway: Callable[[Settings], ServerThread]) -> Iterator[Governed]:
    with governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        yield governed


def chat(client: OpenAI, model: str = "gpt-4o", **extra: Any) -> Any:
    return client.chat.completions.create(model=model, messages=HELLO, **extra)


def test_a_key_limited_to_gpt4o_is_refused_o3_mini_and_sees_only_gpt4o(governed: Governed) -> None:
    _, secret = governed.key("only-4o", models=("gpt-4o",))
    client = governed.client(secret)
    assert chat(client).model == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as refused:
        chat(client, "o3-mini")
    assert refused.value.code == "model_not_found"
    assert refused.value.body["message"] == (  # type: ignore[index]
        "The model `o3-mini` does not exist or you do not have access to it.")
    assert [m.id for m in client.models.list()] == ["gpt-4o"]
    with pytest.raises(openai.NotFoundError) as unknown:
        chat(client, "no-such-model")
    assert "gpt-4o-mini" not in str(unknown.value.body)  # the other models stay unnamed
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("no-such-model")
    assert "gpt-4o-mini" not in str(unknown.value.body)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("o3-mini")
    # Azure's native path names the deployment: it is the model it serves that counts.
    azure = openai.AzureOpenAI(azure_endpoint=governed.server.url, api_key=secret,
                               api_version="2024-10-21", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        azure.chat.completions.create(model="o3-mini", messages=HELLO)
    assert azure.chat.completions.create(model="gpt-4o", messages=HELLO).choices


def test_patterns_allow_a_family(governed: Governed) -> None:
    _, secret = governed.key("4o-family", models=("gpt-4o*",))
    client = governed.client(secret)
    assert sorted(m.id for m in client.models.list()) == ["gpt-4o", "gpt-4o-mini"]
    assert chat(client, "gpt-4o-mini").choices


def test_an_rpm_of_5_admits_exactly_5_of_a_burst_of_20(governed: Governed,
                                                        emulator: Emulator) -> None:
    _, secret = governed.key("rpm5", limits=Limits(rpm=5, tpm=1_000_000))
    client = governed.client(secret)
    before = len(emulator.requests())
    outcomes: list[Any] = []
    for _ in range(20):
        try:
            outcomes.append(client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HELLO))
        except openai.RateLimitError as exc:
            outcomes.append(exc)
    admitted = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(admitted) == 5 and all(not isinstance(o, Exception) for o in outcomes[:5])
    assert len(emulator.requests()) - before == 5
    # A successful answer carries the key's x-ratelimit-* headers.
    assert admitted[0].headers["x-ratelimit-limit-requests"] == "5"
    assert admitted[0].headers["x-ratelimit-remaining-requests"] == "4"
    assert admitted[4].headers["x-ratelimit-remaining-requests"] == "0"
    assert admitted[0].headers["x-ratelimit-limit-tokens"] == "1000000"
    sixth = outcomes[5]
    assert isinstance(sixth, openai.RateLimitError)
    assert sixth.code == "rate_limit_exceeded"
    headers = sixth.response.headers
    assert int(headers["retry-after"]) >= 1 and int(headers["retry-after-ms"]) > 0
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert headers["x-ratelimit-limit-tokens"] == "1000000"
    assert "x-ratelimit-remaining-tokens" in headers and "x-ratelimit-reset-tokens" in headers


def test_a_tpm_limit_refuses_from_the_reservation_before_azure_is_called(
        governed: Governed, emulator: Emulator) -> None:
    _, secret = governed.key("tpm", limits=Limits(tpm=100))
    client = governed.client(secret)
    first = chat(client, max_tokens=40)  # reserves 2 + 40, settles at Azure's usage
    assert first.usage.total_tokens >= 10  # the bucket refills 100/60 a second: seconds of margin
    before = len(emulator.requests())
    with pytest.raises(openai.RateLimitError) as refused:
        chat(client, max_tokens=98)  # max_tokens alone is more than what is left
    headers = refused.value.response.headers
    assert headers["x-ratelimit-limit-tokens"] == "100"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 98 and int(headers["retry-after-ms"]) > 0
    assert len(emulator.requests()) == before  # Azure never saw it
    retrying = governed.client(secret, max_retries=2)
    with pytest.raises(openai.RateLimitError) as never:
        chat(retrying, max_tokens=5000)  # more than the whole minute: waiting will not help
    assert never.value.response.headers["x-should-retry"] == "false"  # so the SDK did not wait
    assert len(emulator.requests()) == before


def test_an_expired_key_gets_401(governed: Governed) -> None:
    key, secret = governed.store.create_key("old", expires_at=time.time() - 1, now=time.time())
    governed.key("alive")  # loaded after the expired one: both are known
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(governed.client(secret))
    assert refused.value.code == "invalid_api_key"
    assert secret not in str(refused.value.body) and key.id not in str(refused.value.body)


def test_unknown_and_blocked_keys_get_401_and_static_keys_still_work(governed: Governed) -> None:
    with pytest.raises(openai.AuthenticationError):
        chat(governed.client("sk-aop-not-a-key"))
    key_id, secret = governed.key("to-block")
    governed.store.update_key(key_id, {"blocked": True})
    until(lambda: _status(governed.server.url, secret) == 401, timeout=10)
    assert chat(governed.client(CLIENT_KEY)).choices


def test_a_team_limit_stops_all_its_keys(governed: Governed) -> None:
    governed.store.create_team("research", limits=Limits(rpm=3), now=time.time())
    _, first = governed.key("r1", team="research")
    _, second = governed.key("r2", team="research")
    a, b = governed.client(first), governed.client(second)
    chat(a), chat(b), chat(a)
    for client in (a, b):
        with pytest.raises(openai.RateLimitError) as refused:
            chat(client)
        assert "team" in refused.value.message
    _, outsider = governed.key("outside")
    assert chat(governed.client(outsider)).choices


def test_a_rotated_key_keeps_its_old_secret_for_the_grace_period(governed: Governed) -> None:
    key_id, old = governed.key("rotating")
    _, new = governed.store.rotate_key(key_id, grace_seconds=3600, now=time.time())
    governed.known(new)
    assert chat(governed.client(old)).choices
    _, newest = governed.store.rotate_key(key_id, grace_seconds=0, now=time.time())
    governed.known(newest)
    for gone in (old, new):
        assert _status(governed.server.url, gone) == 401


def test_max_parallel_is_released_when_the_client_leaves_a_stream(
        tmp_path: Path, start_gateway: Callable[[Settings], ServerThread]) -> None:
    slow = serve(lambda: create_emulator_app(emulator_config(token_ms=50)))
    with slow as emulator, governed_gateway(tmp_path, emulator.url, start_gateway) as governed:
        _released_on_every_path(governed)


def _released_on_every_path(governed: Governed) -> None:
    _, secret = governed.key("one-at-a-time", limits=Limits(max_parallel=1))
    client = governed.client(secret)
    stream = chat(client, stream=True, max_tokens=200)
    next(iter(stream))  # one stream in flight (a token every 50 ms)
    with pytest.raises(openai.RateLimitError):
        chat(client)
    stream.close()  # the client leaves mid-stream
    until(lambda: _chat_status(governed, secret) == 200, timeout=10,
          message="the slot of an abandoned stream was never released")
    assert chat(client).choices  # and a finished request released its slot too


def _chat_status(governed: Governed, secret: str) -> int:
    return httpx.post(governed.server.url + "/v1/chat/completions",
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "gpt-4o", "messages": HELLO}).status_code


def test_the_database_gone_keeps_known_keys_served(
        governed: Governed, caplog: pytest.LogCaptureFixture) -> None:
    _, secret = governed.key("survivor")
    client = governed.client(secret)
    caplog.set_level(logging.WARNING, logger="azure_openai_proxy")
    governed.store.close()
    # The database is destroyed: its files overwritten in place with garbage...
    for suffix in ("", "-wal", "-shm"):
        path = Path(str(governed.database) + suffix)
        if path.exists():
            path.write_bytes(b"this is not a database" * 2000)
    until(lambda: "unavailable" in caplog.text, timeout=10,
          message="the gateway never noticed the database was gone")
    for _ in range(5):
        assert chat(client).choices
    # ...then its directory removed altogether (no empty database is made in its place).
    shutil.rmtree(governed.database.parent)
    for _ in range(5):
        assert chat(client).choices
    assert not governed.database.exists()
    # Back (a restored database): its keys are read again, by the gateway's own poll (not
    # `load_keys_now`: a poll that stopped in the outage would pass unseen).
    governed.store = KeyStore.open(governed.database)
    _, restored = governed.store.create_key("restored", now=time.time())
    governed.known(restored)
    until(lambda: "available again" in caplog.text, timeout=10)
    assert chat(governed.client(restored)).choices
    assert secret not in caplog.text and restored not in caplog.text


def test_every_route_counts_and_none_bypasses_the_limit(governed: Governed,
                                                        emulator: Emulator) -> None:
    _, secret = governed.key("every-route", limits=Limits(rpm=3))
    client = governed.client(secret)
    client.files.list()
    client.audio.transcriptions.create(model="whisper-1",
                                       file=("a.wav", io.BytesIO(silent_wav(0.1)), "audio/wav"))
    client.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="b64_json")
    before = len(emulator.requests())
    azure = openai.AzureOpenAI(azure_endpoint=governed.server.url, api_key=secret,
                               api_version="2024-10-21", max_retries=0)
    refusals = (
        lambda: azure.chat.completions.create(model="gpt-4o", messages=HELLO),
        lambda: client.embeddings.create(model="text-embedding-3-small", input="x"),
        lambda: client.batches.list(),
        lambda: client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", io.BytesIO(silent_wav(0.1)), "audio/wav")),
    )
    for call in refusals:
        with pytest.raises(openai.RateLimitError):
            call()
    assert len(emulator.requests()) == before


def test_a_reload_keeps_the_keys_and_what_they_have_spent(governed: Governed) -> None:
    _, secret = governed.key("across-reloads", limits=Limits(rpm=2))
    client = governed.client(secret)
    chat(client)
    app = governed.server.app

    async def reload() -> None:
        app.reload(app.gateway.settings)

    governed.server.call(reload)
    chat(client)  # known at once by the new routing
    with pytest.raises(openai.RateLimitError):
        chat(client)  # the minute's two requests were counted across the reload


def test_the_answers_the_gateway_gives_itself_count_too(governed: Governed) -> None:
    """`/v1/models`, `/v1/models/{id}` and `/health/deployments` are answered without
    Azure, and still count against the key's RPM (review of issue 13)."""
    _, secret = governed.key("local-routes", limits=Limits(rpm=3))
    client = governed.client(secret)
    listed = client.models.with_raw_response.list()
    assert listed.headers["x-ratelimit-limit-requests"] == "3"
    assert listed.headers["x-ratelimit-remaining-requests"] == "2"
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    health = governed.server.url + "/health/deployments"
    auth = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(health, headers=auth).status_code == 200
    for call in (client.models.list, lambda: client.models.retrieve("gpt-4o"),
                 lambda: chat(client)):
        with pytest.raises(openai.RateLimitError):
            call()
    refused = httpx.get(health, headers=auth)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in refused.headers
