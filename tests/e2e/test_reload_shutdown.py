"""Reload without a drop, graceful SIGTERM, and --workers, on real servers and processes.

The signal tests run `azure-openai-proxy -c FILE` as a child process in front of an
in-process emulator whose streams are paced (a token every few tens of milliseconds),
so a stream is still running when the test reloads or stops the gateway."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.pools import (
    MODEL,
    chat,
    chat_deployment,
    hits,
    pool_config,
    pool_emulator,
    pool_gateway,
    pool_settings,
    sdk,
)
from tests.processes import Process, cli, running
from tests.support import ServerThread, reserved_socket
from tests.waiting import until

PACED = {"token_ms": 40}


def paced_emulator() -> Any:
    return pool_emulator(*(chat_deployment(n) for n in ("dep-a", "dep-b", "dep-c")), **PACED)


def stream_of(client: Any) -> Iterator[Any]:
    return iter(chat(client, "tell me a story", stream=True, max_tokens=20))


def finish(stream: Iterator[Any]) -> list[Any]:
    rest = list(stream)
    assert rest and rest[-1].choices[0].finish_reason == "stop"
    return rest


def reload(gateway: ServerThread, settings: Any) -> None:
    async def swap() -> None:
        assert gateway.app is not None
        gateway.app.reload(settings)

    gateway.call(swap)


def test_a_reload_under_a_running_stream_keeps_the_stream_and_the_live_state() -> None:
    with paced_emulator() as emulator:
        before = pool_settings(emulator.url, [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2})])
        with pool_gateway(before) as gateway:
            client = sdk(gateway)
            emulator.fault("dep-a", "429", retry_after=30)
            stream = stream_of(client)
            next(stream)
            assert [d for d, _ in hits(emulator)] == ["dep-a", "dep-b"]
            # dep-a is still configured (new weight): its cooldown carries over; dep-b goes.
            after = pool_settings(emulator.url, [("dep-a", {"priority": 1, "weight": 3}),
                                                 ("dep-c", {"priority": 2})])
            reload(gateway, after)
            assert chat(client, max_tokens=1).choices
            assert hits(emulator)[-1] == ("dep-c", 200)
            finish(stream)  # the stream on the old routing ran to its end
            assert [d for d, _ in hits(emulator)] == ["dep-a", "dep-b", "dep-c"]


def write_config(path: Path, url: str, members: list[tuple[str, dict[str, Any]]], **extra: Any) -> None:
    path.write_text(yaml.safe_dump(pool_config(url, members, **extra)))


def wait_for_log(process: Process, text: str, timeout: float = 10.0) -> None:
    until(lambda: text in process.output(), timeout, f"{text!r} not logged")


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@contextmanager
def gateway_process(config: Path, *args: str) -> Iterator[tuple[Process, Any]]:
    with reserved_socket() as held:  # bound, never listening: the gateway binds it too
        port = held.getsockname()[1]
        with running(cli("-c", str(config), "-l", f"127.0.0.1:{port}", *args), port=port) as process:
            yield process, _client(port)


def _client(port: int) -> Any:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=CLIENT_KEY, max_retries=0,
                    timeout=30)
    client.port = port  # type: ignore[attr-defined]
    return client


def test_sighup_reloads_and_a_bad_config_leaves_the_old_one_serving(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    with paced_emulator() as emulator:
        write_config(config, emulator.url, [("dep-a", {})])
        with gateway_process(config) as (process, client):
            chat(client, max_tokens=1)
            assert hits(emulator)[-1] == ("dep-a", 200)
            config.write_text("models: {gpt-4o: []}\n")  # invalid: an empty pool
            process.signal(signal.SIGHUP)
            wait_for_log(process, "reload rejected")
            assert "models.gpt-4o must be a non-empty list" in process.output()
            chat(client, max_tokens=1)
            assert hits(emulator)[-1] == ("dep-a", 200)
            write_config(config, emulator.url, [("dep-b", {})])
            process.signal(signal.SIGHUP)
            wait_for_log(process, "configuration reloaded")
            chat(client, max_tokens=1)
            assert hits(emulator)[-1] == ("dep-b", 200)


def test_sigterm_lets_a_stream_finish_and_refuses_new_connections(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    with paced_emulator() as emulator:
        write_config(config, emulator.url, [("dep-a", {})], shutdown_grace_seconds=20)
        with gateway_process(config) as (process, client):
            stream = stream_of(client)
            next(stream)
            process.signal(signal.SIGTERM)
            until(lambda: refused(client.port), 10, "still accepting connections after SIGTERM")
            finish(stream)
            assert process.popen.wait(10) == 0
        assert [d for d, _ in hits(emulator)] == ["dep-a"]


def test_workers_serve_one_port_from_separate_processes(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    with pool_emulator() as emulator:
        write_config(config, emulator.url, [("dep-a", {})])
        with gateway_process(config, "--workers", "2") as (process, client):
            pids: set[int] = set()
            deadline = time.monotonic() + 20
            while len(pids) < 2:
                assert time.monotonic() < deadline, pids
                request = urllib.request.Request(
                    f"http://127.0.0.1:{client.port}/health/deployments",
                    headers={"Authorization": f"Bearer {CLIENT_KEY}", "Connection": "close"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        pids.add(json.loads(response.read())["worker"])
                except OSError:
                    time.sleep(0.05)  # the second worker may still be starting
            assert process.popen.pid not in pids
            process.signal(signal.SIGTERM)
            assert process.popen.wait(15) == 0


def test_check_config_accepts_the_failover_keys(tmp_path: Path) -> None:
    import subprocess

    config = tmp_path / "config.yaml"
    write_config(config, "https://east.example.com", [("dep-a", {"priority": 1}), ("dep-b", {"priority": 2})],
                 routing_strategy="latency", circuit_failures=3, circuit_open_seconds=5,
                 cooldown_seconds=2, latency_exploration=0.2, watch_config=True)
    result = subprocess.run(cli("check-config", "-c", str(config)), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert MODEL in result.stdout and "dep-b" in result.stdout
    assert "routing: latency" in result.stdout and "after 3 failures for 5 s" in result.stdout
