"""nginx over TLS (a self-signed certificate for 127.0.0.1) in front of an HTTP/1.1 server:
the https upstream of the `upstream.http2: auto` tests. With `http2`, ALPN offers h2 (and
http/1.1, which a WebSocket's upgrade needs); without, only http/1.1. Each request's
protocol as nginx saw it (`HTTP/2.0`, `HTTP/1.1`) is a line of `protocols.log`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import wait_for_port
from tests.unit.test_fasttransport import _self_signed

__all__ = ["TlsUpstream", "nginx_tls"]


class TlsUpstream:
    """A running TLS nginx: its URL, the certificate a client must trust, its log."""

    def __init__(self, url: str, cert: Path, log: Path) -> None:
        self.url = url
        self.cert = cert
        self.log = log

    def protocols(self) -> list[str]:
        """The protocol of each request served so far (nginx writes a line as each ends)."""
        return self.log.read_text().split() if self.log.exists() else []


def _conf(tmp: Path, port: int, backend: str, cert: Path, key: Path, http2: bool) -> str:
    paths = "\n".join(f"  {kind}_temp_path {tmp / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        ("user root;\n" if os.geteuid() == 0 else "")
        + "worker_processes 1;\n"
        f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n{paths}\n"
        "  log_format protocol $server_protocol;\n"
        f"  access_log {tmp / 'protocols.log'} protocol;\n"
        "  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }\n"
        "  server {\n"
        f"    listen 127.0.0.1:{port} ssl{' http2' if http2 else ''};\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
        "    location / {\n"
        f"      proxy_pass {backend};\n"
        "      proxy_http_version 1.1;\n"
        "      proxy_set_header Upgrade $http_upgrade;\n"
        "      proxy_set_header Connection $connection_upgrade;\n"
        "      proxy_buffering off;\n"
        "      proxy_request_buffering off;\n"
        "    }\n"
        "  }\n}\n"
    )


@contextmanager
def nginx_tls(tmp: Path, port: int, backend: str, *, http2: bool) -> Iterator[TlsUpstream]:
    """Run it in front of `backend` (http://host:port); yields it, at https://127.0.0.1:port."""
    cert, key = _self_signed(tmp)
    conf = tmp / "nginx.conf"
    conf.write_text(_conf(tmp, port, backend, cert, key, http2))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"),
                              "-c", str(conf), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for_port(port, process=nginx)
        yield TlsUpstream(f"https://127.0.0.1:{port}", cert, tmp / "protocols.log")
    finally:
        nginx.terminate()
        nginx.wait(10)
