"""A paced SSE upstream for the stream-scale benchmark (issue 15) that is never the
bottleneck: nginx with the echo module (`libnginx-mod-http-echo`) answering every chat
call with Azure's real stream, frame by frame, `echo_sleep` between content frames and
`echo_flush` after each, all in C (no interpreter per frame).

The frames, in Azure's order (/work/shared/azure-openai-wire.md, section 4):

1. the prompt-filter frame (`choices: []`, `prompt_filter_results`), at once;
2. the role frame (`delta: {"role": "assistant", "content": ""}`), at once;
3. `content` frames, one every `interval_ms`; every `annotate_every`-th is followed by
   an asynchronous content-filter annotation frame (no `delta`, `id: ""`,
   `content_filter_offsets`);
4. the finish frame (`finish_reason: stop`, `delta: {}`);
5. the usage frame (`choices: []`, `usage`);
6. `data: [DONE]`.

Every content token ends in `~` (`CONTENT_MARK`), a byte no other frame holds, so the load
generator counts content frames with one `bytes.count` whatever a proxy did to the rest.

`frames` and `nginx_conf` are pure (tested with plain data); `start_paced` runs it.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.procs import HOST, Children, free_port

__all__ = ["CONTENT_MARK", "ECHO_MODULE", "PacedStream", "TlsListen", "frames",
           "have_echo_module", "nginx_conf", "protocol_label", "protocols", "self_signed",
           "start_paced", "tls_listen"]

CONTENT_MARK = b"~"
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_ID, _CREATED, _MODEL, _FINGERPRINT = "chatcmpl-AzPaced0001", 1727000000, "gpt-4o-2024-08-06", "fp_5b26d85e12"
_WORDS = ("Your", " parcel", " is", " late", ",", " so", " please", " wait", " one", " more", " day")


@dataclass(frozen=True)
class PacedStream:
    """One stream's shape: `content_frames` tokens `interval_ms` apart."""

    content_frames: int = 50
    interval_ms: float = 75.0
    annotate_every: int = 10  # an annotation frame after every 10th content frame (0: none)


def _frame(payload: dict[str, object] | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    return b"data: " + data + b"\n\n"


def _chunk(choices: list[dict[str, object]], **extra: object) -> bytes:
    return _frame({"choices": choices, "created": _CREATED, "id": _ID, "model": _MODEL,
                   "object": "chat.completion.chunk", "system_fingerprint": _FINGERPRINT, **extra})


def _content(index: int) -> bytes:
    token = _WORDS[index % len(_WORDS)] + CONTENT_MARK.decode()
    return _chunk([{"content_filter_results": _FILTERS, "delta": {"content": token},
                    "finish_reason": None, "index": 0, "logprobs": None}])


def _annotation(offset: int) -> bytes:
    return _frame({"choices": [{"content_filter_offsets": {"check_offset": 0, "start_offset": 0,
                                                           "end_offset": offset},
                                "content_filter_results": _FILTERS, "index": 0,
                                "finish_reason": None}],
                   "created": 0, "id": "", "model": "", "object": ""})


def frames(shape: PacedStream) -> tuple[bytes, list[bytes], bytes]:
    """(what is sent at once, each content step's bytes, what ends the stream). A content
    step is its content frame plus the annotation frame that follows it, if any."""
    head = _frame({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                   "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTERS}]})
    head += _chunk([{"content_filter_results": {}, "delta": {"content": "", "refusal": None,
                                                            "role": "assistant"},
                     "finish_reason": None, "index": 0, "logprobs": None}])
    steps = []
    for index in range(shape.content_frames):
        step = _content(index)
        if shape.annotate_every and (index + 1) % shape.annotate_every == 0:
            step += _annotation(index + 1)
        steps.append(step)
    tail = _chunk([{"content_filter_results": {}, "delta": {}, "finish_reason": "stop",
                    "index": 0, "logprobs": None}])
    tail += _chunk([], usage={"completion_tokens": shape.content_frames, "prompt_tokens": 61,
                              "total_tokens": 61 + shape.content_frames})
    tail += _frame("[DONE]")
    return head, steps, tail


def frames_per_stream(shape: PacedStream) -> int:
    """Every SSE frame the upstream sends for one stream, `[DONE]` included."""
    head, steps, tail = frames(shape)
    return sum(part.count(b"data: ") for part in (head, *steps, tail))


def _echo(data: bytes) -> str:
    """An `echo -n` directive sending `data` exactly: nginx's quoted strings know `\\n`,
    `\\"` and `\\\\`; `$` would start a variable, so the frames carry none."""
    text = data.decode()
    if "$" in text or "'" in text:
        raise ValueError("a paced frame must hold no '$' and no single quote")
    return "echo -n '" + text.replace("\\", "\\\\").replace("\n", "\\n") + "';"


@dataclass(frozen=True)
class TlsListen:
    """Where the paced upstream also listens over TLS (`ssl http2`: ALPN offers h2 and
    http/1.1), with a certificate for 127.0.0.1 (`self_signed`)."""

    port: int
    cert: Path
    key: Path

    @property
    def log(self) -> Path:
        """Each request's protocol, a line each (`protocols`), beside the certificate."""
        return self.cert.parent / "protocols.log"


def tls_listen(workdir: Path) -> TlsListen:
    """A free port and a new certificate, in a directory of their own under `workdir`."""
    directory = Path(tempfile.mkdtemp(prefix="tls-", dir=workdir))
    return TlsListen(free_port(), *self_signed(directory))


def nginx_conf(tmp: Path, port: int, shape: PacedStream, *, workers: int = 1,
               nofile: int = 20_000, as_root: bool = False, h2_port: int | None = None,
               tls: TlsListen | None = None) -> str:
    """The nginx configuration of the paced upstream on `HOST:port`, with `tmp` for its
    pid, logs and temporary files, each worker holding up to `nofile` descriptors (the
    hard limit it inherits: a worker cannot raise it). Several workers share the port
    with `reuseport`, so the kernel spreads the connections evenly. With `h2_port`, the
    same streams are served there over HTTP/2 with prior knowledge (h2c), up to 20,000
    streams a connection (a gateway with `upstream.http2` multiplexes them on a few).
    With `tls`, over TLS on its port too, where each request's protocol (`HTTP/2.0`,
    `HTTP/1.1`) is a line of `tls.log` (`protocols`): one short write per stream, so
    that a run can say what a proxy negotiated."""
    head, steps, tail = frames(shape)
    sleep = f"echo_sleep {shape.interval_ms / 1000:.3f};"
    body = [_echo(head), "echo_flush;"]
    for step in steps:
        body += [sleep, _echo(step), "echo_flush;"]
    body += [_echo(tail)]
    location = "\n".join("      " + line for line in body)
    paths = "\n".join(f"  {kind}_temp_path {tmp / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    share = " reuseport" if workers > 1 else ""
    return (
        f"load_module {ECHO_MODULE};\n"
        + ("user root;\n" if as_root else "")
        + f"worker_processes {workers};\n"
        f"worker_rlimit_nofile {nofile};\n"
        f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n"
        f"events {{ worker_connections {max(64, nofile - 64)}; multi_accept on; }}\n"
        f"http {{\n  access_log off;\n{paths}\n  keepalive_requests 1000000;\n"
        "  keepalive_timeout 75s;\n  client_body_buffer_size 64k;\n"
        + ("  http2_recv_buffer_size 1m;\n" if h2_port or tls else "")
        + ("  log_format protocol $server_protocol;\n" if tls else "")
        # two UUIDs of each answer's own, from nginx's random 32 hex digits
        + "  map $request_id $paced_apim_id {\n    \"~^(?<ia>.{8})(?<ib>.{4})(?<ic>.{4})"
        "(?<id>.{4})(?<ie>.{12})$\" \"$ia-$ib-$ic-$id-$ie\";\n  }\n"
        "  map $request_id $paced_request_id {\n    \"~^(?<ra>.{12})(?<rb>.{4})(?<rc>.{4})"
        "(?<rd>.{4})(?<re>.{8})$\" \"$re-$rd-$rc-$rb-$ra\";\n  }\n"
        "  map $msec $paced_requests {\n    \"~[.](?<mr>[0-9]{3})$\" \"9$mr\";\n  }\n"
        "  map $msec $paced_tokens {\n    \"~(?<ts>[0-9]{3})[.](?<tm>[0-9]{3})$\" \"1$ts$tm\";\n  }\n"
        + "  server {\n"
        f"    listen {HOST}:{port} backlog=65535{share};\n"
        + (f"    listen {HOST}:{h2_port} http2{share};\n" if h2_port else "")
        + (f"    listen {HOST}:{tls.port} ssl http2 backlog=65535{share};\n"
           f"    ssl_certificate {tls.cert};\n    ssl_certificate_key {tls.key};\n"
           # $https is "on" on the TLS listener, "" on the others (`if=` skips ""): the
           # control streams on the plain port are not logged.
           f"    access_log {tls.log} protocol if=$https;\n" if tls else "")
        + ("    http2_max_concurrent_streams 20000;\n" if h2_port or tls else "")
        + "    location ~ ^/openai/deployments/[^/]+/chat/completions$ {\n"
        "      default_type text/event-stream;\n"
        # Azure's head on every answer (/work/shared/azure-openai-wire.md): ids and
        # counts of the answer's own, so no two heads are the same bytes (a fixed id let
        # a header-block cache pay here that never would against Azure). nginx cannot
        # count down: the counts are digits of the clock's milliseconds (fresh as often),
        # led by 9 and 1 so that the balancer never reads a deployment out of quota.
        "      add_header apim-request-id $paced_apim_id always;\n"
        "      add_header x-request-id $paced_request_id always;\n"
        "      add_header x-ms-region \"East US\" always;\n"
        "      add_header x-ratelimit-remaining-requests $paced_requests always;\n"
        "      add_header x-ratelimit-remaining-tokens $paced_tokens always;\n"
        "      echo_read_request_body;\n"
        f"{location}\n"
        "    }\n"
        "  }\n}\n"
    )


def protocols(log: Path, since: int = 0) -> tuple[dict[str, int], int]:
    """How many requests of each protocol the TLS listener served after byte `since` of
    its log, and the log's size now (the next call's `since`)."""
    data = log.read_bytes() if log.exists() else b""
    counts: dict[str, int] = {}
    for word in data[since:].split():
        counts[word.decode()] = counts.get(word.decode(), 0) + 1
    return counts, len(data)


def protocol_label(counts: dict[str, int]) -> str:
    """A row's name suffix from `protocols`' counts: `(https, h2 by ALPN)`, `(https,
    HTTP/1.1)`, or both with their counts when a run saw both."""
    names = {"HTTP/2.0": "h2 by ALPN"}
    if not counts:
        return "(https, none seen)"
    if len(counts) == 1:
        return f"(https, {names.get(next(iter(counts)), next(iter(counts)))})"
    return "(https, " + ", ".join(f"{names.get(k, k)} x{v}" for k, v in sorted(counts.items())) + ")"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A new P-256 certificate for 127.0.0.1 and its key, made by `openssl` (a client
    trusts it through SSL_CERT_FILE: Python's `ssl.create_default_context()` and Go's
    crypto/x509 both read it on Linux)."""
    cert, key = directory / "paced-cert.pem", directory / "paced-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def have_echo_module() -> bool:
    return shutil.which("nginx") is not None and ECHO_MODULE.is_file()


def start_paced(children: Children, shape: PacedStream, *, workers: int = 1,
                h2_port: int | None = None, tls: TlsListen | None = None) -> tuple[int, int]:
    """Start the paced upstream; (its port, the pid of its master). Its workers are the
    master's children (`bench.procs.descendants`). With `h2_port`, h2c there too; with
    `tls`, TLS there too."""
    port = free_port()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    tmp = children.workdir / f"paced-{port}"
    tmp.mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, port, shape, workers=workers, nofile=nofile,
                               as_root=os.geteuid() == 0, h2_port=h2_port, tls=tls))
    argv = ["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf),
            "-g", "daemon off;"]
    child = children.start(f"paced-{port}", argv, port)
    return port, child.pid
