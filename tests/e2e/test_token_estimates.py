"""The TPM reservation of a virtual key's request (review of issue 13, finding 7):
embeddings reserve no completion, the default completion is a setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.store.keys import KeyStore
from tests.e2e.conftest import Emulator, gateway_settings
from tests.e2e.test_virtual_keys import HELLO, Governed
from tests.support import ServerThread


def test_embeddings_fit_a_tpm_below_the_default_completion(
        tmp_path: Path, emulator: Emulator,
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    database = tmp_path / "gateway.db"
    settings = gateway_settings(emulator.url, database=f"sqlite://{database}",
                                default_completion_tokens=200)
    store = KeyStore.open(database)
    try:
        governed = Governed(start_gateway(settings), database, store)
        _, secret = governed.key("small-tpm", limits=Limits(tpm=500))
        client = governed.client(secret)
        assert client.embeddings.create(model="text-embedding-3-small", input="hello").data
        # The configured default (200) is reserved, not 1,024: this one fits 500.
        assert client.chat.completions.create(model="gpt-4o", messages=HELLO).choices
        before = len(emulator.requests())
        with pytest.raises(openai.RateLimitError):  # 3 choices of 200: more than the minute
            client.chat.completions.create(model="gpt-4o", messages=HELLO, n=3)
        assert len(emulator.requests()) == before
    finally:
        store.close()
