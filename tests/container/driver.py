"""The container checks of tests/container/run.sh, as a user runs the image: one
PASS/FAIL line per check, exit 1 if any failed. Standard library only; talks to the
containers through ports published on 127.0.0.1 and to Docker through its CLI.

    python3 driver.py --docker /usr/bin/docker --image azure-openai-proxy --run-id ID \
        --version 0.1.0 [--secrets FILE...]

Every container and network it makes carries the label aop-container-test=ID (run.sh
removes them whatever happens); every wait has a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EMULATOR_KEY = "emulator-azure-key"
CLIENT_KEY = "team-key"
UID = "10001"
HEALTHY_WITHIN = 90.0  # seconds: the image's HEALTHCHECK probes every 10 s
SLOW_TOKEN_MS = "500"  # the slow emulator: ~16 tokens of a short answer, about 8 s


# The README's Docker section, verbatim: the checks run these (see as_run) and fail if the
# README no longer shows them.
README = Path(__file__).resolve().parent.parent.parent / "README.md"
README_BUILD = "docker build -t azure-openai-proxy ."
README_DEMO = "docker run --rm -p 8080:8080 azure-openai-proxy demo --listen 0.0.0.0:8080"
README_EMULATOR = """docker run -d --network aop --network-alias emulator azure-openai-proxy \\
  emulate --listen 0.0.0.0:8001 --api-key emulator-azure-key"""
README_SEED = """docker run -d --network aop -p 8080:8080 \\
  -e AZURE_OPENAI_ENDPOINT=http://emulator:8001 \\
  -e AZURE_OPENAI_API_VER=2024-10-21 \\
  -e AZURE_OPENAI_MODEL_MAPPER=gpt-4o=gpt-4o \\
  azure-openai-proxy"""


class CheckFailed(Exception):
    pass


def as_run(command: str, image: str, network: str) -> list[str]:
    """A README `docker run` line as this test runs it: detached (docker.run adds -d and a
    name), published on a free port of 127.0.0.1, on this run's network, this image."""
    args = shlex.split(command.replace("\\\n", " "))[2:]
    out: list[str] = []
    for arg in args:
        if arg in ("-d", "--rm"):
            continue
        if out[-1:] == ["-p"]:
            arg = "127.0.0.1::" + arg.rpartition(":")[2]
        elif out[-1:] == ["--network"]:
            arg = network
        elif arg == "azure-openai-proxy":
            arg = image
        out.append(arg)
    return out


@dataclass
class Docker:
    binary: str
    run_id: str
    made: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise CheckFailed(f"docker {' '.join(args[:3])}... exited {result.returncode}: "
                              f"{result.stderr.strip()[-500:]}")
        return result.stdout.strip()

    def run(self, name: str, *args: str) -> str:
        full = f"aop-ct-{name}-{self.run_id[-12:]}"
        self("run", "-d", "--name", full, "--label", f"aop-container-test={self.run_id}", *args)
        self.made.append(full)
        return full

    def network(self) -> str:
        name = f"aop-ct-net-{self.run_id[-12:]}"
        self("network", "create", "--label", f"aop-container-test={self.run_id}", name)
        return name

    def port(self, container: str, port: int) -> int:
        mapping = self("port", container, f"{port}/tcp").splitlines()[0]
        return int(mapping.rpartition(":")[2])

    def inspect(self, container: str, template: str) -> str:
        return self("inspect", "-f", template, container)

    def wait_healthy(self, container: str, deadline: float) -> str:
        while True:
            status = self.inspect(container, "{{.State.Status}} {{.State.Health.Status}}")
            if status == "running healthy" or not status.startswith("running") \
                    or time.monotonic() >= deadline:
                break
            time.sleep(1)
        if status != "running healthy":
            last = self.inspect(container, "{{json .State.Health}}")
            raise CheckFailed(f"{container}: {status!r} (wanted 'running healthy'); health: {last[-400:]}")
        return status

    def logs(self, container: str) -> str:
        result = subprocess.run([self.binary, "logs", "--tail", "15", container],
                                capture_output=True, text=True, timeout=30)
        return (result.stdout + result.stderr).strip()


@dataclass
class Report:
    failures: int = 0
    passes: int = 0

    @contextlib.contextmanager
    def check(self, name: str, docker: Docker | None = None, container: str | None = None) -> Iterator[list[str]]:
        notes: list[str] = []
        try:
            yield notes
        except Exception as exc:  # a check's failure of any kind is a FAIL line, not a traceback
            self.failures += 1
            print(f"FAIL {name}: {exc.__class__.__name__}: {exc}", flush=True)
            if docker is not None and container is not None:
                print("  last log lines of " + container + ":\n    "
                      + docker.logs(container).replace("\n", "\n    "), flush=True)
        else:
            self.passes += 1
            print(f"PASS {name}" + (f": {'; '.join(notes)}" if notes else ""), flush=True)


# -- HTTP from the host, through the published ports ---------------------------------------

def wait_for_http(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/health")
                if connection.getresponse().status < 500:
                    return
            finally:
                connection.close()
        time.sleep(0.3)
    raise CheckFailed(f"nothing answered on 127.0.0.1:{port}")


def post(port: int, path: str, key: str, body: bytes, content_type: str = "application/json",
         timeout: float = 30) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def chat(port: int, key: str, model: str = "gpt-4o") -> str:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]}).encode()
    status, data = post(port, "/v1/chat/completions", key, body)
    if status != 200:
        raise CheckFailed(f"chat completion: {status} {data[:300]!r}")
    return str(json.loads(data)["choices"][0]["message"]["content"])


@dataclass
class Stream:
    """A streamed chat completion read frame by frame (in a thread for the stop check)."""

    port: int
    frames: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: str = ""
    first_content: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    ended: float = 0.0

    def read(self) -> None:
        self.started = time.monotonic()
        body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
            {"role": "user", "content": "Tell me a long story about containers."}]}).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("POST", "/v1/chat/completions", body=body, headers={
                "Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                self.error = f"status {response.status}: {response.read()[:300]!r}"
                return
            for raw in response:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    self.done = True
                elif line.startswith("data: "):
                    frame = json.loads(line[6:])
                    self.frames.append(frame)
                    if "error" in frame:
                        self.error = f"error event: {frame['error']}"
                    elif any(c.get("delta", {}).get("content") for c in frame.get("choices", [])):
                        self.first_content.set()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            connection.close()
            self.ended = time.monotonic()
            self.first_content.set()  # wake the waiter whatever happened

    def choices(self) -> list[dict[str, Any]]:
        return [choice for frame in self.frames for choice in frame.get("choices", [])]

    def text(self) -> str:
        return "".join(str(c.get("delta", {}).get("content") or "") for c in self.choices())

    def finish_reason(self) -> object:
        reasons = [c["finish_reason"] for c in self.choices() if c.get("finish_reason")]
        return reasons[-1] if reasons else None


# -- the checks -----------------------------------------------------------------------------

def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docker", default="docker")
    parser.add_argument("--image", default="azure-openai-proxy")
    parser.add_argument("--run-id", default=f"aop-ct-{uuid.uuid4().hex[:12]}")
    parser.add_argument("--version", required=True)
    parser.add_argument("--base", help="the base image, to print what the image adds to it")
    parser.add_argument("--secrets", nargs="*", default=[])
    args = parser.parse_args(argv)
    docker, report, image = Docker(args.docker, args.run_id), Report(), args.image

    check_image(docker, report, image, args.version, [Path(p) for p in args.secrets])
    net = docker.network()
    # Everything starts at once; the checks then wait on each (health probes every 10 s).
    demo = docker.run("demo", *as_run(README_DEMO, image, net))
    emulator = docker.run("emulator", *as_run(README_EMULATOR, image, net))
    docker.run("slow-emulator", "--network", net, "--network-alias", "slow-emulator", image,
                "emulate", "--listen", "0.0.0.0:8001", "--api-key", EMULATOR_KEY,
                "--token-ms", SLOW_TOKEN_MS)
    # The Go tool's own `docker run` line (env mode, clients send their Azure key), offline:
    seed = docker.run("seed", *as_run(README_SEED, image, net))
    # A server-side Azure key with gateway client keys, listening on 9090 by the environment:
    keyed = docker.run("keyed", "--network", net, "-p", "127.0.0.1::9090",
                       "-e", "AZURE_OPENAI_ENDPOINT=http://emulator:8001",
                       "-e", f"AZURE_OPENAI_API_KEY={EMULATOR_KEY}",
                       "-e", "AZURE_OPENAI_MODEL_MAPPER=gpt-4o=gpt-4o,whisper-1=whisper",
                       "-e", f"AZURE_OPENAI_PROXY_CLIENT_KEYS={CLIENT_KEY}",
                       "-e", "AZURE_OPENAI_PROXY_LISTEN=0.0.0.0:9090", image)
    # Read-only root filesystem (the image's volumes stay writable), listening on 8181 by flag:
    readonly = docker.run("readonly", "--read-only", "--network", net, "-p", "127.0.0.1::8181",
                          "-e", "AZURE_OPENAI_ENDPOINT=http://emulator:8001",
                          "-e", f"AZURE_OPENAI_API_KEY={EMULATOR_KEY}",
                          "-e", "AZURE_OPENAI_MODEL_MAPPER=gpt-4o=gpt-4o,whisper-1=whisper",
                          "-e", f"AZURE_OPENAI_PROXY_CLIENT_KEYS={CLIENT_KEY}",
                          image, "serve", "--listen", "0.0.0.0:8181")
    # In front of the slow emulator, for `docker stop` during a stream:
    draining = docker.run("stop", "--read-only", "--network", net, "-p", "127.0.0.1::8080",
                          "-e", "AZURE_OPENAI_ENDPOINT=http://slow-emulator:8001",
                          "-e", f"AZURE_OPENAI_API_KEY={EMULATOR_KEY}",
                          "-e", "AZURE_OPENAI_MODEL_MAPPER=gpt-4o=gpt-4o",
                          "-e", f"AZURE_OPENAI_PROXY_CLIENT_KEYS={CLIENT_KEY}", image)

    with report.check("the README's Docker section shows the commands this test runs") as notes:
        section = README.read_text().partition("\n## Docker\n")[2].partition("\n## ")[0]
        missing = [c.splitlines()[0] for c in (README_BUILD, README_DEMO, README_EMULATOR, README_SEED)
                   if c not in section]
        if missing:
            raise CheckFailed(f"not in the README's Docker section: {missing}")
        notes.append("build, demo, emulator and the seed's line")
    check_demo(docker, report, demo)
    check_user(docker, report, demo)
    with report.check("seed-style `docker run -e AZURE_OPENAI_ENDPOINT=... -e AZURE_OPENAI_MODEL_MAPPER=...` "
                      "reaches the emulator container", docker, seed) as notes:
        port = docker.port(seed, 8080)
        wait_for_http(port, time.monotonic() + 30)
        notes.append(f"answer {chat(port, EMULATOR_KEY)[:40]!r}")  # passthrough: the Azure key
    with report.check("server-side key (-e AZURE_OPENAI_API_KEY=...) with client keys, "
                      "listen 0.0.0.0:9090 from the environment", docker, keyed) as notes:
        port = docker.port(keyed, 9090)
        wait_for_http(port, time.monotonic() + 30)
        notes.append(f"answer {chat(port, CLIENT_KEY)[:40]!r}")
        status, _ = post(port, "/v1/chat/completions", EMULATOR_KEY, b"{}")
        if status != 401:
            raise CheckFailed(f"the Azure key used as a client key got {status}, wanted 401")
    check_read_only(docker, report, readonly)
    check_stop(docker, report, draining)
    deadline = time.monotonic() + HEALTHY_WITHIN
    for container, what in ((demo, "demo on 8080"), (keyed, "serve on 9090 (environment)"),
                            (readonly, "serve on 8181 (--listen flag), --read-only"),
                            (emulator, "emulate on 8001")):
        with report.check(f"health becomes healthy: {what}", docker, container) as notes:
            started = time.monotonic()
            docker.wait_healthy(container, deadline)
            notes.append(f"waited {time.monotonic() - started:.0f} s")
    check_compose(docker, report)
    size = int(docker.inspect(image, "{{.Size}}"))
    added = f", {(size - int(docker.inspect(args.base, '{{.Size}}'))) / 1e6:.0f} MB on top of {args.base}" \
        if args.base else ""
    print(f"image size: {size / 1e6:.0f} MB ({image}{added})", flush=True)
    print(f"container: {report.passes} passed, {report.failures} failed", flush=True)
    return 1 if report.failures else 0


def check_image(docker: Docker, report: Report, image: str, version: str, secrets: list[Path]) -> None:
    with report.check("image: OCI labels, numeric USER, no build leftovers, no build secrets") as notes:
        labels = json.loads(docker.inspect(image, "{{json .Config.Labels}}"))
        printed = docker("run", "--rm", image, "--version")
        if labels.get("org.opencontainers.image.version") != version or not printed.endswith(version):
            raise CheckFailed(f"version label {labels.get('org.opencontainers.image.version')!r}, "
                              f"--version {printed!r}, package {version!r}")
        if labels.get("org.opencontainers.image.licenses") != "MIT" or \
                "org.opencontainers.image.source" not in labels:
            raise CheckFailed(f"labels: {labels}")
        user = docker.inspect(image, "{{.Config.User}}")
        if not user.split(":")[0].isdigit() or user.split(":")[0] == "0":
            raise CheckFailed(f"USER {user!r} is not a numeric non-root uid")
        leftovers = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                           "ls -A /app; ls -d /src /opt/venv/bin/pip* 2>/dev/null; "
                           "find /opt/venv /app -name '*.egg-info' -o -name build -type d | head -5; true")
        if leftovers:
            raise CheckFailed(f"build leftovers in the image: {leftovers!r}")
        history = docker("history", "--no-trunc", image) + docker.inspect(image, "{{json .Config.Env}}")
        for secret in secrets:
            text = secret.read_text(errors="replace") if secret.is_file() else ""
            if "PIP_CONFIG_FILE" in history or "PIP_CERT" in history or \
                    any(line.strip() and line.strip() in history for line in text.splitlines()[:50]):
                raise CheckFailed(f"the build's secrets ({secret.name}) show in the image's history or env")
        notes.append(f"USER {user}, version {version}, licences MIT")
    with report.check("healthcheck exits 1 when nothing answers") as notes:
        result = subprocess.run([docker.binary, "run", "--rm", image, "healthcheck", "--listen", "127.0.0.1:9"],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 1:
            raise CheckFailed(f"exit {result.returncode}: {result.stdout}{result.stderr}")
        notes.append(result.stdout.strip())


def check_demo(docker: Docker, report: Report, demo: str) -> None:
    with report.check("demo (`demo --listen 0.0.0.0:8080`, -p) answers a chat completion and a stream "
                      "from the host", docker, demo) as notes:
        port = docker.port(demo, 8080)
        wait_for_http(port, time.monotonic() + 30)
        notes.append(f"answer {chat(port, 'demo-client-key')[:40]!r}")
        body = json.dumps({"model": "gpt-4o", "stream": True,
                           "messages": [{"role": "user", "content": "Hello"}]}).encode()
        status, data = post(port, "/v1/chat/completions", "demo-client-key", body)
        frames = [line for line in data.decode().splitlines() if line.startswith("data: ")]
        if status != 200 or frames[-1:] != ["data: [DONE]"] or len(frames) < 3:
            raise CheckFailed(f"stream: {status} {data[:300]!r}")
        notes.append(f"stream of {len(frames)} events ending in [DONE]")


def check_user(docker: Docker, report: Report, demo: str) -> None:
    with report.check("`docker exec ... id -u` is the numeric non-root uid; app files root's and "
                      "read-only to it; the server is PID 1", docker, demo) as notes:
        uid = docker("exec", demo, "id", "-u")
        if uid != UID:
            raise CheckFailed(f"id -u is {uid!r}, wanted {UID}")
        owners = docker("exec", demo, "stat", "-c", "%u", "/app", "/opt/venv", "/opt/venv/bin/azure-openai-proxy")
        if set(owners.split()) != {"0"}:
            raise CheckFailed(f"app files owned by {owners.split()}, wanted root (0)")
        writable = docker("exec", demo, "sh", "-c",
                          "for p in /app /opt/venv /opt/venv/lib /opt/venv/bin/azure-openai-proxy; do "
                          "[ -w $p ] && echo $p; done; true")
        if writable:
            raise CheckFailed(f"writable by the service user: {writable.split()}")
        pid1 = docker("exec", demo, "cat", "/proc/1/cmdline").replace("\0", " ")
        if "azure-openai-proxy" not in pid1:
            raise CheckFailed(f"PID 1 is {pid1!r}")
        notes.append(f"uid {uid}, PID 1: {pid1.strip()}")


def check_read_only(docker: Docker, report: Report, container: str) -> None:
    with report.check("runs with --read-only plus its volumes (a 2 MB upload spooled to /tmp)",
                      docker, container) as notes:
        if docker.inspect(container, "{{.HostConfig.ReadonlyRootfs}}") != "true":
            raise CheckFailed("not read-only")
        mounts = sorted(json.loads(docker.inspect(container, "{{json .Mounts}}")),
                        key=lambda m: str(m["Destination"]))
        if [m["Destination"] for m in mounts] != ["/tmp", "/var/lib/azure-openai-proxy"]:
            raise CheckFailed(f"volumes: {mounts}")
        port = docker.port(container, 8181)
        wait_for_http(port, time.monotonic() + 30)
        chat(port, CLIENT_KEY)
        boundary = "aopboundary"
        audio = bytes(range(256)) * 8192  # 2 MiB: past the 1 MiB kept in memory
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                f"Content-Type: audio/wav\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
        status, data = post(port, "/v1/audio/transcriptions", CLIENT_KEY, body,
                            content_type=f"multipart/form-data; boundary={boundary}", timeout=60)
        if status != 200:
            raise CheckFailed(f"transcription: {status} {data[:300]!r}")
        probe = docker("exec", container, "sh", "-c",
                       "touch /app/x 2>/dev/null && echo app-writable; "
                       "touch /tmp/x /var/lib/azure-openai-proxy/x && echo volumes-writable")
        if probe != "volumes-writable":
            raise CheckFailed(f"writes: {probe!r}")
        notes.append("root filesystem read-only, /tmp and /var/lib/azure-openai-proxy writable")


def check_stop(docker: Docker, report: Report, container: str) -> None:
    with report.check("`docker stop -t 40` during an 8-second stream lets it finish; exit 0",
                      docker, container) as notes:
        port = docker.port(container, 8080)
        wait_for_http(port, time.monotonic() + 30)
        stream = Stream(port)
        reader = threading.Thread(target=stream.read, daemon=True)
        reader.start()
        if not stream.first_content.wait(30) or stream.error:
            raise CheckFailed(f"the stream did not start: {stream.error}")
        stop_started = time.monotonic()
        docker("stop", "-t", "40", container, timeout=60)
        stop_took = time.monotonic() - stop_started
        reader.join(30)
        if reader.is_alive() or stream.error or not stream.done:
            raise CheckFailed(f"stream cut: done={stream.done} error={stream.error!r} "
                              f"text so far {stream.text()!r}")
        if stream.finish_reason() not in ("stop", "length"):
            raise CheckFailed(f"finish_reason {stream.finish_reason()!r}")
        state = docker.inspect(container, "{{.State.ExitCode}} {{.State.OOMKilled}}")
        if state != "0 false":
            raise CheckFailed(f"exit code and OOMKilled: {state}")
        notes.append(f"stream {stream.ended - stream.started:.1f} s, {len(stream.frames)} events + [DONE]; "
                     f"docker stop took {stop_took:.1f} s; exit code 0")


def check_compose(docker: Docker, report: Report) -> None:
    compose = Path(__file__).resolve().parent.parent.parent / "docker-compose.yml"
    tools = [[docker.binary, "compose"], ["docker-compose"]]
    for tool in tools:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run([*tool, "version"], capture_output=True, timeout=30).returncode == 0:
                break
    else:
        print("SKIP docker-compose.yml: neither `docker compose` nor `docker-compose` is installed", flush=True)
        return
    with report.check(f"`{' '.join(Path(t).name for t in tool)} config` validates docker-compose.yml") as notes:
        result = subprocess.run([*tool, "-f", str(compose), "config"], capture_output=True, text=True,
                                timeout=60, env={"PATH": "/usr/bin:/bin", "AZURE_OPENAI_API_KEY": "x"})
        if result.returncode != 0:
            raise CheckFailed(result.stderr.strip()[-600:])
        config = result.stdout
        for needed in ("stop_grace_period: 40s", "open-webui", "OPENAI_API_BASE_URL", "healthcheck"):
            if needed not in config:
                raise CheckFailed(f"{needed!r} not in the resolved configuration")
        notes.append("gateway + Open WebUI, stop_grace_period 40s, healthcheck")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
