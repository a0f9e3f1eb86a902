"""The stream-scale benchmark's paced upstream (bench/paced.py) served by a real nginx
with the echo module: a chat call gets exactly the frames `frames()` builds, in Azure's
order, chunked, as a stream (skipped where nginx or the module is absent)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.paced import PacedStream, frames, have_echo_module, nginx_conf
from tests.processes import wait_for_port

pytestmark = pytest.mark.skipif(not have_echo_module(),
                                reason="nginx with the echo module: apt-get install -y "
                                       "nginx libnginx-mod-http-echo")


def _dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        line_end = body.index(b"\r\n", pos)
        size = int(body[pos:line_end], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[line_end + 2:line_end + 2 + size])
        pos = line_end + 2 + size + 2


def test_a_chat_call_gets_the_paced_frames(tmp_path: Path, reserve_port: Callable[[], int]) -> None:
    shape = PacedStream(content_frames=4, interval_ms=1, annotate_every=2)
    port = reserve_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, port, shape, as_root=os.geteuid() == 0))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                              "-c", str(conf), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for_port(port, process=nginx)
        body = b'{"stream":true,"messages":[]}'
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 "
                         b"HTTP/1.1\r\nHost: x\r\napi-key: k\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
    finally:
        nginx.terminate()
        nginx.wait(10)
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Type: text/event-stream" in head and b"Transfer-Encoding: chunked" in head
    first, steps, last = frames(shape)
    assert _dechunk(payload) == first + b"".join(steps) + last
