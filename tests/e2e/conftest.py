"""Real servers on loopback: the bundled Azure emulator, and the gateway in front of it."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator import create_emulator_app, load_emulator_config, mask_secret
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.runtime.demo import DEMO_MODELS
from azure_openai_proxy.settings import Settings
from tests.support import ServerThread, serve

AZURE_KEY = "azure-key-for-tests-0123456789"
CLIENT_KEY = "client-key-for-tests"

# OpenAI model name -> emulator deployment name: the demo's mapping, except that
# gpt-3.5-turbo is left to the '.'-stripping fallback (tests exercise it).
MODELS = {**{m: d for m, d in DEMO_MODELS.items() if m != "gpt-3.5-turbo"},
          "gpt-35-turbo": "gpt-35-turbo"}


class Emulator:
    """The emulator's admin endpoint, for arranging faults and reading what reached it."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.url = server.url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_emulator/requests")["data"])

    def last(self) -> dict[str, Any]:
        return self.requests()[-1]

    def fault(self, deployment: str, fault: str, **options: Any) -> None:
        self._call("POST", "/_emulator/faults", {"deployment": deployment, "fault": fault, **options})

    def reset(self) -> None:
        self._call("POST", "/_emulator/reset", {})


def emulator_config(**overrides: Any) -> Any:
    import dataclasses

    config = load_emulator_config(None, api_key=AZURE_KEY)
    return dataclasses.replace(config, **overrides) if overrides else config


@contextlib.contextmanager
def emulator_with(*more: Any) -> Iterator[Emulator]:
    """The emulator serving its usual deployments and `more` (EmulatedDeployment)."""
    import dataclasses

    config = emulator_config()
    config = dataclasses.replace(config, deployments=(*config.deployments, *more))
    with serve(lambda: create_emulator_app(config)) as server:
        yield Emulator(server)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with serve(lambda: create_emulator_app(emulator_config())) as server:
        yield Emulator(server)


def gateway_settings(endpoint: str, **extra: Any) -> Settings:
    config: dict[str, Any] = {
        "deployment_config": [
            {"model_name": model, "deployment_name": deployment, "endpoint": endpoint,
             "api_key": AZURE_KEY, "api_version": "2025-04-01-preview"}
            for model, deployment in MODELS.items()
        ],
        "client_keys": [CLIENT_KEY],
    }
    config.update(extra)
    return load_settings(config, {})


@pytest.fixture
def start_gateway() -> Iterator[Callable[[Settings], ServerThread]]:
    started: list[ServerThread] = []

    def start(settings: Settings) -> ServerThread:
        server = ServerThread(lambda: create_app(settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def gateway(emulator: Emulator, start_gateway: Callable[[Settings], ServerThread]) -> ServerThread:
    return start_gateway(gateway_settings(emulator.url))


@pytest.fixture
def client(gateway: ServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


MASKED_AZURE_KEY = mask_secret(AZURE_KEY)
