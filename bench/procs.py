"""Child processes of the benchmark: start, wait until serving, measure memory, kill.

Every child is started in a session of its own and registered in `Children`; closing it
(try/finally in `run.main`, and `atexit` as a backstop) kills each child's process group
by its id, so a gateway's workers or LiteLLM's uvicorn die with it. Everything listens
on 127.0.0.1 only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Children:
    """Every process the benchmark started; `close()` kills them all (idempotent)."""

    workdir: Path
    running: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        atexit.register(self.close)

    def start(self, name: str, argv: Sequence[str], port: int,
              env: dict[str, str] | None = None) -> Child:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, cwd=self.workdir,
            )
        child = Child(name, process, port, log_path, time.perf_counter())
        self.running.append(child)
        return child

    def stop(self, child: Child) -> None:
        _kill_group(child.process)
        if child in self.running:
            self.running.remove(child)

    def close(self) -> None:
        for child in reversed(self.running):
            _kill_group(child.process)
        self.running.clear()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # The child leads its own session, so its group id is its pid: this reaches its
    # workers and nothing else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def wait_until(child: Child, probe: Callable[[], bool], timeout: float) -> float:
    """Poll `probe` until it is true; the seconds since the child was started."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited during start-up:\n{child.log_tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError, ConnectionError):
            if probe():
                return time.perf_counter() - child.started
        time.sleep(0.005)
    raise RuntimeError(f"{child.name} did not start in {timeout:.0f}s:\n{child.log_tail()}")


def http_ok(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bool:
    request = urllib.request.Request(url, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return 200 <= response.status < 300
    except urllib.error.HTTPError:
        return False


def _status_kib(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    return _status_kib(pid, "VmHWM") / 1024


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc's parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (every thread), from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def runqueue_wait_seconds(pid: int) -> float:
    """Seconds the threads of `pid` have spent runnable but waiting for a CPU
    (/proc/PID/task/*/schedstat): how much a busy machine held the system back."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(task.read_text().split()[1])
    return total / 1e9


def open_descriptors(pids: list[int]) -> int:
    """Descriptors open in `pids` now (0 for those gone)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


class PeakDescriptors:
    """The most descriptors `pids` held at once while it ran (a thread samples them)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before = self.peak = open_descriptors(pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, open_descriptors(self.pids))

    def __enter__(self) -> PeakDescriptors:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
