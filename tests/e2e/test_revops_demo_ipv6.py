"""`azure-openai-proxy demo` on IPv6 loopback (`--listen [::1]:P --emulator-listen
[::1]:Q`), as the gateway's own --listen takes it: the emulator was given the URL's
host `[::1]` as a socket address ("Name or service not known", exit 1), and the
instructions printed `http://::1:P/v1`, a URL curl and the SDK cannot use."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.processes import cli, running
from tests.waiting import until


@pytest.fixture
def ipv6_ports() -> Iterator[tuple[int, int]]:
    """Two ports held on ::1 (bound, never listening: the demo may bind them itself)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    held = []
    try:
        for _ in range(2):
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("::1", 0))
            except OSError:
                sock.close()
                pytest.skip("no IPv6 loopback")
            held.append(sock)
        yield held[0].getsockname()[1], held[1].getsockname()[1]
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("host", ["[::1]", "[::]"])  # [::]: shown as [::1], as 0.0.0.0 is
def test_the_demo_on_ipv6_loopback_works_as_printed(
        host: str, ipv6_ports: tuple[int, int]) -> None:
    port, emulator_port = ipv6_ports
    with running(cli("demo", "--listen", f"{host}:{port}",
                     "--emulator-listen", f"[::1]:{emulator_port}")) as demo:
        until(lambda: "curl " in demo.output() or demo.popen.poll() is not None, timeout=30)
        lines = demo.output().splitlines()
        assert any(f"http://[::1]:{port}/v1 " in line for line in lines), lines  # main: exit 1
        curl = next(line for line in lines if line.startswith("curl "))
        result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert json.loads(result.stdout)["choices"][0]["message"]["content"], result
