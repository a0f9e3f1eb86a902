"""A key's TPM debt through the gateway with the openai SDK (govacct audit): Azure billed
a prompt four times its estimate (the emulator counts every punctuation mark a token, the
gateway a token per four characters), and the debt past one minute's allowance was
forgiven: two minutes later the key was let through again with a full minute, having
used 8,000 tokens of a 3,000 TPM. It now waits the debt out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator
from tests.e2e.pools import FakeClock, chat_deployment, pool_emulator, pool_gateway, pool_settings
from tests.support import ServerThread
from tests.waiting import until

PROMPT = "a," * 4000  # 8,000 characters: 2,000 tokens reserved, ~8,000 billed


@contextmanager
def keyed_gateway(tmp_path: Path, tpm: int,
                  clock: FakeClock) -> Iterator[tuple[Emulator, ServerThread, str]]:
    """An emulator, a gateway in front of it on `clock`, and the secret of a key of `tpm`
    tokens a minute in its database."""
    database = tmp_path / "gw.db"
    store = KeyStore.open(database)
    try:
        _, secret = store.create_key("k", now=time.time(), limits=Limits(tpm=tpm))
    finally:
        store.close()
    with pool_emulator(chat_deployment("dep-a")) as emulator:
        settings = pool_settings(emulator.url, [("dep-a", {})], database=f"sqlite:///{database}")
        with pool_gateway(settings, clock=clock) as gateway:
            yield emulator, gateway, secret


def test_usage_past_the_reservation_is_waited_out(tmp_path: Path) -> None:
    clock = FakeClock()
    with keyed_gateway(tmp_path, 3000, clock) as (emulator, gateway, secret):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=secret, max_retries=0,
                               timeout=30)
        until(lambda: _known(client), timeout=10, message="the key never loaded")
        messages = [{"role": "user", "content": PROMPT}]
        answer = client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                                max_tokens=1)
        assert answer.usage is not None and answer.usage.prompt_tokens > 8000
        clock.advance(120)  # two minutes: 6,000 tokens refilled, less than the ~8,000 used
        sent = len(emulator.requests())
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                           max_tokens=1)
        assert "tokens per minute" in str(refused.value)
        assert len(emulator.requests()) == sent
        clock.advance(60)  # the debt and this request's 2,001 refilled
        assert client.chat.completions.create(model="gpt-4o", messages=messages,  # type: ignore[arg-type]
                                              max_tokens=1).choices


def _known(client: openai.OpenAI) -> bool:
    try:
        client.models.list()
    except openai.AuthenticationError:
        return False
    return True
