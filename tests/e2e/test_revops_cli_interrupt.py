"""Ctrl-C while a CLI command waits (a database locked by the server, a slow disk, a
config file on a pipe): exit 130, as a shell counts a SIGINT, and no traceback. It
printed Python's KeyboardInterrupt traceback, the frames of wherever it waited."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.processes import cli


def _opened_for_writing(fifo: Path, process: subprocess.Popen[bytes]) -> int:
    """The write end, once the command opened the read end: it then waits to read."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            assert exc.errno == errno.ENXIO and process.poll() is None
            assert time.monotonic() < deadline, "the command never opened its config"
            time.sleep(0.01)


def _reading(process: subprocess.Popen[bytes]) -> None:
    """Until the command waits in its read of the config. A SIGINT that lands between
    the FIFO's open returning and that read is CPython's own race (its handler runs in
    C, and the read that follows is not interrupted: the KeyboardInterrupt waits for
    it), which a person's Ctrl-C does not hit but a test timed on the open does (1 run
    in ~25 under load). The kernel says where the process sleeps (`wchan`; "0" while it
    runs); where it never names a place (hidden), a short wait after 5 s does."""
    wchan = Path(f"/proc/{process.pid}/wchan")
    start = time.monotonic()
    where, named = "", False
    while time.monotonic() - start < 30 and process.poll() is None:
        try:
            where = wchan.read_text()
        except OSError:
            where = ""
        if "pipe_read" in where or "pipe_wait" in where:
            return
        named = named or where not in ("", "0")
        if not named and time.monotonic() - start > 5:
            time.sleep(0.5)
            return
        time.sleep(0.005)
    raise AssertionError(f"the command never waited to read its config ({where!r})")


def _as_a_shell_starts_it() -> None:
    """A SIGINT disposition of the child's own: an ignored or blocked SIGINT is inherited
    through exec (a Python started with it ignored never raises KeyboardInterrupt), and
    the test process may hold either from a test run before it in the same worker."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signals(pid: int) -> str:
    """The child's signal masks (Sig*: pending, blocked, ignored, caught), for a failure."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "(gone)"
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(("Sig", "Shd")))


def test_ctrl_c_while_a_command_waits_exits_130_without_a_traceback(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # what the command reads, and nothing ever writes
    process = subprocess.Popen(cli("keys", "list", "-c", str(fifo)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_as_a_shell_starts_it)
    writer = -1
    try:
        writer = _opened_for_writing(fifo, process)
        _reading(process)
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit 30 s after SIGINT: {_signals(process.pid)}") from None
    finally:
        if writer >= 0:
            os.close(writer)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode(), err
    assert process.returncode == 130 and out == b""  # main: killed by SIGINT, a traceback
