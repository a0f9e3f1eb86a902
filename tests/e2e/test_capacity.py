"""What the gateway process can hold (issue 15), on a real process on loopback: the soft
descriptor limit raised to the hard one at start, a warning when even that cannot hold
`server.max_connections`, the listen backlog as configured up to the kernel's somaxconn,
and a connection past the cap refused with OpenAI's 503, then closed."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.processes import running

# Start the CLI with low descriptor limits (exec keeps the pid, so /proc shows them).
_LIMITED = ("import os, resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))\n"
            "os.execv(sys.executable, [sys.executable, '-m', 'azure_openai_proxy', *sys.argv[3:]])\n")
_ENV = {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9/"}


def _gateway(port: int, *flags: str, soft: int = 256, hard: int = 1024) -> list[str]:
    return [sys.executable, "-c", _LIMITED, str(soft), str(hard), "-l", f"127.0.0.1:{port}",
            "--log-level", "debug", *flags]


def _soft_fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


def _listen_backlog(port: int) -> int:
    """A listening socket's Send-Q in `ss` is its backlog."""
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[2])


def test_the_descriptor_limit_is_raised_and_a_cap_it_cannot_hold_is_warned(
        reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    with running(_gateway(port, "--max-connections", "1000"), port=port, env=_ENV) as gateway:
        assert _soft_fd_limit(gateway.popen.pid) == 1024
        output = gateway.output()
    assert "cannot hold server.max_connections (1000" in output
    assert "each worker answers 503 past 480 connections" in output
    assert "descriptor limit: soft 1024 (was 256), hard 1024" in output


def test_a_cap_the_limit_holds_is_not_warned(reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    with running(_gateway(port, "--max-connections", "400"), port=port, env=_ENV) as gateway:
        assert _soft_fd_limit(gateway.popen.pid) == 1024
        output = gateway.output()
    assert "cannot hold" not in output


def test_the_backlog_is_high_by_default_and_bounded_by_somaxconn(
        reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    with running(_gateway(port), port=port, env=_ENV):
        kernel = int(Path("/proc/sys/net/core/somaxconn").read_text())
        assert _listen_backlog(port) == min(65_535, kernel)
    port = reserve_port()
    with running(_gateway(port), port=port, env={**_ENV, "AZURE_OPENAI_PROXY_BACKLOG": "100"}):
        assert _listen_backlog(port) == 100


def _served(port: int) -> socket.socket | None:
    """A connection the gateway serves (kept alive), or None when it was refused (the
    start-up probe's connection may not have been closed yet)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n")
    head = sock.recv(65536)
    if head.startswith(b"HTTP/1.1 503"):
        sock.close()
        return None
    assert head.startswith(b"HTTP/1.1 "), head[:80]
    return sock


def _read_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


def _hold(port: int, count: int) -> list[socket.socket]:
    """`count` connections the gateway serves, kept open."""
    held: list[socket.socket] = []
    for _ in range(count + 20):  # bounded: the probe's connection leaves within a few tries
        if len(held) == count:
            break
        if (sock := _served(port)) is not None:
            held.append(sock)
    assert len(held) == count
    return held


def _assert_refused(port: int) -> None:
    """The next connection gets OpenAI's 503, then the gateway closes it."""
    extra = socket.create_connection(("127.0.0.1", port), timeout=10)
    extra.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n")
    reply = _read_all(extra)  # ends: the gateway closed it, no hang
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"retry-after: 1" in head.lower()
    assert orjson.loads(body)["error"]["code"] == "server_overloaded"
    extra.close()


def test_a_connection_past_the_cap_gets_an_openai_503_and_is_closed(
        reserve_port: Callable[[], int]) -> None:
    port = reserve_port()
    with running(_gateway(port, "--max-connections", "2"), port=port, env=_ENV):
        held = _hold(port, 2)
        _assert_refused(port)
        for sock in held:
            sock.close()


def test_the_cap_is_lowered_to_what_the_descriptor_limit_holds(
        reserve_port: Callable[[], int]) -> None:
    """80 descriptors: (80 - 64 of margin) / 2 per stream = 8 connections, then 503s,
    rather than accepts failing (a reset) once the descriptors run out."""
    port = reserve_port()
    with running(_gateway(port, "--max-connections", "1000", soft=80, hard=80), port=port,
                 env=_ENV) as gateway:
        held = _hold(port, 8)
        _assert_refused(port)
        for sock in held:
            sock.close()
        output = gateway.output()
    assert "each worker answers 503 past 8 connections" in output


def test_check_config_says_when_the_kernel_caps_the_backlog(tmp_path: Path) -> None:
    kernel = int(Path("/proc/sys/net/core/somaxconn").read_text())
    config = tmp_path / "config.yaml"
    config.write_text("endpoint: https://r.openai.azure.com/\nserver:\n"
                      f"  backlog: {kernel + 1}\n")
    done = subprocess.run([sys.executable, "-m", "azure_openai_proxy", "check-config", "-c",
                           str(config)], capture_output=True, text=True, timeout=60, check=True)
    assert f"backlog {kernel + 1} (net.core.somaxconn caps it at {kernel})" in done.stdout
