"""nginx serving HTTP/2 with prior knowledge (h2c) in front of an HTTP/1.1 server: the
HTTP/2 upstream the tests of `upstream/h2/` talk to (Debian's nginx is built with
http_v2). nginx 1.22 says `listen PORT http2;`; from 1.25 `http2 on;` does too."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import wait_for_port

__all__ = ["have_nginx", "nginx_h2c", "nginx_h2c_conf"]


def have_nginx() -> bool:
    return shutil.which("nginx") is not None


def nginx_h2c_conf(tmp: Path, port: int, backend: str, *, max_streams: int = 128,
                   requests: int = 100_000) -> str:
    """nginx on 127.0.0.1:`port` speaking h2c, proxying everything to `backend`
    (http://host:port) without buffering, `max_streams` streams per connection, and a
    GOAWAY after `requests` requests on a connection."""
    paths = "\n".join(f"  {kind}_temp_path {tmp / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        ("user root;\n" if os.geteuid() == 0 else "")
        + "worker_processes 1;\n"
        f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n{paths}\n"
        f"  keepalive_requests {requests};\n"
        "  server {\n"
        f"    listen 127.0.0.1:{port} http2;\n"
        f"    http2_max_concurrent_streams {max_streams};\n"
        "    location / {\n"
        f"      proxy_pass {backend};\n"
        "      proxy_http_version 1.1;\n"
        "      proxy_set_header Connection \"\";\n"
        "      proxy_buffering off;\n"
        "      proxy_request_buffering off;\n"
        "    }\n"
        "  }\n}\n"
    )


@contextmanager
def nginx_h2c(tmp: Path, port: int, backend: str, **options: int) -> Iterator[str]:
    """Run it; yields its URL (http://127.0.0.1:port)."""
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_h2c_conf(tmp, port, backend, **options))
    nginx = subprocess.Popen(["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"),
                              "-c", str(conf), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        wait_for_port(port, process=nginx)
        yield f"http://127.0.0.1:{port}"
    finally:
        nginx.terminate()
        nginx.wait(10)
