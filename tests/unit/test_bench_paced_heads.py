"""The paced upstream answers with Azure's head: ids and rate-limit counts of each answer's
own (/work/shared/azure-openai-wire.md), so that no benchmark pays for a cut that only an
upstream repeating its head would give (a fixed `apim-request-id` made every h2 header
block the same bytes within a second). Real nginx on loopback, two answers compared."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from bench.paced import PacedStream, have_echo_module, nginx_conf
from bench.procs import HOST, free_port

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAMES = ("apim-request-id", "x-request-id", "x-ms-region", "x-ratelimit-remaining-requests",
          "x-ratelimit-remaining-tokens")


def _head(port: int) -> dict[str, str]:
    deadline = time.monotonic() + 10
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            conn.request("POST", "/openai/deployments/gpt-4o/chat/completions", body=b"{}")
            answer = conn.getresponse()
            answer.read()
            return {name: answer.getheader(name, "") for name in _NAMES}
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


def test_every_answer_carries_ids_and_counts_of_its_own(tmp_path: Path) -> None:
    if not have_echo_module():
        pytest.skip("nginx with the echo module is not installed")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / kind).mkdir()
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, port, PacedStream(content_frames=1, interval_ms=1),
                               as_root=os.geteuid() == 0))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                              "-c", str(conf), "-g", "daemon off;"])
    try:
        first = _head(port)
        time.sleep(0.002)  # the counts are the clock's milliseconds
        second = _head(port)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
    for head in (first, second):
        assert _UUID.fullmatch(head["apim-request-id"]), head
        assert _UUID.fullmatch(head["x-request-id"]), head
        assert head["apim-request-id"] != head["x-request-id"]
        assert head["x-ms-region"] == "East US"
        # numbers the balancer reads (balancing/headers.py), never a deployment out of quota
        assert int(head["x-ratelimit-remaining-requests"]) >= 9000
        assert int(head["x-ratelimit-remaining-tokens"]) >= 1_000_000
    for name in _NAMES:
        if name != "x-ms-region":
            assert first[name] != second[name], name
