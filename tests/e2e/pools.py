"""Pools of deployments on one emulator, and a gateway whose clock and randomness the
test holds: helpers for the failover, metrics and reload tests."""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.emulator import create_emulator_app
from azure_openai_proxy.emulator.config import EmulatedDeployment
from azure_openai_proxy.gateway.app import create_app
from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import AZURE_KEY, CLIENT_KEY, Emulator, emulator_config
from tests.support import ServerThread, serve

NAMES = ("dep-a", "dep-b", "dep-c")
MODEL = "gpt-4o"
API_VERSION = "2025-04-01-preview"


class FakeClock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_deployment(name: str, tpm: int = 1_000_000, **extra: Any) -> EmulatedDeployment:
    return EmulatedDeployment(name, "gpt-4o-2024-08-06", "chat", tpm=tpm, rpm=extra.pop("rpm", 60_000),
                              **extra)


@contextmanager
def pool_emulator(*deployments: EmulatedDeployment, **config: Any) -> Iterator[Emulator]:
    """An emulator serving `deployments` (default: three chat deployments dep-a/b/c)."""
    chosen = deployments or tuple(chat_deployment(name) for name in NAMES)
    with serve(lambda: create_emulator_app(emulator_config(deployments=chosen, **config))) as server:
        yield Emulator(server)


def pool_config(url: str, members: Sequence[tuple[str, dict[str, Any]]], **extra: Any) -> dict[str, Any]:
    return {
        "models": {
            MODEL: [
                {"deployment_name": name, "endpoint": url, "api_key": AZURE_KEY,
                 "api_version": API_VERSION, **options}
                for name, options in members
            ]
        },
        "client_keys": [CLIENT_KEY],
        **extra,
    }


def pool_settings(url: str, members: Sequence[tuple[str, dict[str, Any]]], **extra: Any) -> Settings:
    return load_settings(pool_config(url, members, **extra), {})


@contextmanager
def pool_gateway(settings: Settings, clock: FakeClock | None = None, seed: int = 0,
                 **app_options: Any) -> Iterator[ServerThread]:
    options: dict[str, Any] = {"rng": random.Random(seed), **app_options}
    if clock is not None:
        options["clock"] = clock
    with serve(lambda: create_app(settings, **options)) as server:
        yield server


def sdk(gateway: ServerThread) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30)


def chat(client: Any, text: str = "hello", **extra: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **extra
    )


def hits(emulator: Emulator) -> list[tuple[str | None, int | None]]:
    """(deployment, status) for every data-plane request the emulator received."""
    return [(r["deployment"], r["status"]) for r in emulator.requests()]


def health(gateway: ServerThread) -> dict[str, Any]:
    request = urllib.request.Request(gateway.url + "/health/deployments",
                                     headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def circuit_of(gateway: ServerThread, deployment: str) -> str:
    rows = [d for d in health(gateway)["deployments"] if d["deployment"] == deployment]
    return str(rows[0]["circuit"])

