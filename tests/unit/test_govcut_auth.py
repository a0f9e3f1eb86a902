"""Governance on, the request's key found from its headers once (branch govcut): a
static client key's `Authorization` is looked up and parsed once, not three times (the
remembered-header miss, `presented_key`, then the keyring's own `presented_key`), and
every kind of caller is still told apart as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.errors import AuthenticationFailed
from azure_openai_proxy.gateway.keydirectory import KeyDirectory
from azure_openai_proxy.gateway.pipeline import Gateway
from azure_openai_proxy.store.keys import KeyStore


class CountedHeaders(dict[str, str]):
    """Request headers that count the look-ups of each name."""

    def __init__(self, *args: object, **kwargs: str) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.looked_up: dict[str, int] = {}

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.looked_up[name] = self.looked_up.get(name, 0) + 1
        return super().get(name, default)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[KeyDirectory, str]]:
    store = KeyStore.open(tmp_path / "gateway.db")
    _, secret = store.create_key("a", now=1_000_000.0)
    store.close()
    directory = KeyDirectory(tmp_path / "gateway.db", clock=lambda: 1_000_000.0)
    asyncio.run(directory.refresh())
    yield directory, secret
    asyncio.run(directory.close())


def _gateway(directory: KeyDirectory, client_keys: list[str],
             api_key: str | None = "azure-key") -> Gateway:
    from azure_openai_proxy.config import load_settings
    from azure_openai_proxy.gateway.balancer import Balancer
    from azure_openai_proxy.upstream.fast import FastTransport

    deployment = {"deployment_name": "gpt-4o", "model_name": "gpt-4o",
                  "endpoint": "http://127.0.0.1:9/"}
    if api_key is not None:
        deployment["api_key"] = api_key
    settings = load_settings({"client_keys": client_keys,
                              "deployment_config": [deployment]}, {})
    return Gateway(settings, FastTransport(settings.upstream), Balancer(settings),
                   directory=directory)


def test_a_static_key_s_authorization_is_looked_up_once(
        directory: tuple[KeyDirectory, str]) -> None:
    gateway = _gateway(directory[0], ["static-key"])
    headers = CountedHeaders({"Authorization": "Bearer static-key"})
    caller = gateway.authenticate(headers)
    assert caller.key is None and caller.passthrough_key is None
    assert headers.looked_up == {"Authorization": 1}


def test_each_caller_is_told_apart_as_before(directory: tuple[KeyDirectory, str]) -> None:
    keys, secret = directory
    gateway = _gateway(keys, ["static-key"])
    virtual = gateway.authenticate(CountedHeaders({"Authorization": f"Bearer {secret}"}))
    assert virtual.key is not None
    headers = CountedHeaders({"Authorization": f"Bearer {secret}"})
    assert gateway.authenticate(headers) is virtual  # remembered: the header not parsed
    assert headers.looked_up == {"Authorization": 1}
    assert gateway.authenticate({"api-key": secret}) is virtual
    assert gateway.authenticate({"api-key": " static-key "}).key is None
    assert gateway.authenticate({"Authorization": "bearer  static-key "}).key is None
    for wrong in ({"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}, {},
                  {"Authorization": f"Bearer {secret}x"}):
        with pytest.raises(AuthenticationFailed):
            gateway.authenticate(wrong)


def test_without_client_keys_only_a_virtual_key_spends_the_server_s_keys(
        directory: tuple[KeyDirectory, str]) -> None:
    keys, secret = directory
    gateway = _gateway(keys, [])
    assert gateway.authenticate({"Authorization": f"Bearer {secret}"}).key is not None
    with pytest.raises(AuthenticationFailed):
        gateway.authenticate({"Authorization": "Bearer an-azure-key"})
    # No key of the server's own: a caller's key is passed through, as without governance.
    passthrough = _gateway(keys, [], api_key=None)
    assert passthrough.authenticate(
        {"Authorization": "Bearer an-azure-key"}).passthrough_key == "an-azure-key"
