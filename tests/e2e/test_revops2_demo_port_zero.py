"""`azure-openai-proxy demo --listen 127.0.0.1:0` (any free port) prints the port it
bound, not 0: the printed `curl` line and SDK snippet went to port 0."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

from tests.processes import cli, running
from tests.waiting import until


def test_the_demo_on_any_port_prints_the_one_it_bound(
        reserve_port: Callable[[], int]) -> None:
    with running(cli("demo", "--listen", "127.0.0.1:0",
                     "--emulator-listen", f"127.0.0.1:{reserve_port()}")) as demo:
        until(lambda: "curl " in demo.output() or demo.popen.poll() is not None, timeout=30)
        lines = demo.output().splitlines()
        ports = {int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)/v1", "\n".join(lines))}
        assert len(ports) == 1 and 0 not in ports, lines  # main: http://127.0.0.1:0/v1
        curl = next(line for line in lines if line.startswith("curl "))
        result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert json.loads(result.stdout)["choices"][0]["message"]["content"], result
