"""Real processes for end-to-end tests: started, waited for, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None) -> None:
    def listening() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        until(listening, timeout)
    except AssertionError:
        raise TimeoutError(f"nothing listened on port {port} within {timeout}s") from None


class Process:
    """A child process whose combined output goes to a file we can read at any time."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="proc-", suffix=".log", delete=False)  # noqa: SIM115
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.popen = subprocess.Popen(
            list(args), stdout=self.log, stderr=subprocess.STDOUT, env=full_env,
            cwd=str(cwd or ROOT), start_new_session=True,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return int(self.popen.returncode)


@contextmanager
def running(args: Sequence[str], port: int | None = None, env: Mapping[str, str] | None = None,
            cwd: str | Path | None = None) -> Iterator[Process]:
    process = Process(args, env, cwd)
    try:
        if port is not None:
            try:
                wait_for_port(port, process=process.popen)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}; output:\n{process.output()}") from None
        yield process
    finally:
        process.stop()
        os.unlink(process.log.name)


def cli(*args: str) -> list[str]:
    """The gateway's console script, run with this interpreter."""
    return [sys.executable, "-m", "azure_openai_proxy", *args]


PPROXY_BOOT = (
    "import sys, asyncio\n"
    "sys.modules['uvloop'] = None  # pproxy's uvloop path is broken on Python 3.11+\n"
    "asyncio.set_event_loop(asyncio.new_event_loop())\n"
    "from pproxy.server import main\n"
    "sys.argv = ['pproxy', *sys.argv[1:]]\n"
    "main()\n"
)


def pproxy(*listen: str) -> list[str]:
    """A real HTTP/SOCKS5 proxy (pproxy), verbose so it logs every connection."""
    args = [sys.executable, "-c", PPROXY_BOOT]
    for url in listen:
        args += ["-l", url]
    return [*args, "-v"]
