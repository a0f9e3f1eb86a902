"""`--workers N` with governance makes its shared tables (rate limits, budget holds,
chained contexts: files in /dev/shm) one after another before it starts the workers. A
SIGTERM that came after the first was made and before the last was (a service manager's
stop right after its start) ended the server with the tables made so far left in
/dev/shm, until the next start swept them (and a second SIGTERM as they were removed
left the rest). A stop is now held while they are made or removed, then taken: every
one made is removed, and the stop is still a clean one (exit 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_reload_shutdown import write_config
from tests.e2e.test_workerlife_edges import UNREACHABLE, _holds_sighup
from tests.processes import cli, running
from tests.waiting import until

# The real server, in a real process: the only change is a stop sent by the process to
# itself at the moment in question (just after the first table's file was made), where
# a signal from outside would land by chance only. Each table's path is printed.
_STOPPED_AMID_THE_TABLES = """
import os, signal, sys
from azure_openai_proxy.cli import main
from azure_openai_proxy.governance.sharedlimits import SharedLimits

create = SharedLimits.create.__func__
made = []

def create_then_stop(cls, *args, **kwargs):
    table = create(cls, *args, **kwargs)
    if table.path not in made:
        made.append(table.path)
        print("table", table.path, flush=True)
    if len(made) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return table

SharedLimits.create = classmethod(create_then_stop)
if "--twice" in sys.argv:  # another stop as the first table is removed
    sys.argv.remove("--twice")
    remove = SharedLimits.remove

    def stop_then_remove(self):
        if self.path == made[0]:
            os.kill(os.getpid(), signal.SIGTERM)
        remove(self)

    SharedLimits.remove = stop_then_remove
sys.exit(main(sys.argv[1:]))
"""


def _tables_of(pid: int) -> list[str]:
    """The shared tables named after process `pid` (the name holds its pid)."""
    names = []
    for directory in ("/dev/shm", "/tmp"):
        if os.path.isdir(directory):
            names += [os.path.join(directory, name) for name in os.listdir(directory)
                      if name.startswith("azure-openai-proxy-limits-")
                      and f"-{pid}-" in name]
    return names


def _config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "config.yaml"
    write_config(config, UNREACHABLE, [("dep-a", {})])
    return config, {**os.environ, "AZURE_OPENAI_PROXY_DATABASE": f"sqlite:///{tmp_path}/g.db"}


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
def test_a_stop_while_the_tables_are_made_leaves_none(tmp_path: Path, twice: bool) -> None:
    """`twice`: a second SIGTERM as the first table is removed (a stop sent again)."""
    config, env = _config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", _STOPPED_AMID_THE_TABLES, "-c", str(config),
         "-l", "127.0.0.1:0", "--workers", "2", *(["--twice"] if twice else [])],
        capture_output=True, text=True, timeout=60, env=env)
    output = done.stdout + done.stderr
    made = [line.split(" ", 1)[1] for line in done.stdout.splitlines()
            if line.startswith("table ")]
    assert made, output  # (the stop came after the first table, as meant)
    assert done.returncode == 0 and "Traceback" not in output, output
    left = [path for path in made if os.path.exists(path)]
    for path in left:  # (not left for the next test run to sweep)
        os.unlink(path)
    assert not left, f"left in place: {left}\n{output}"  # main: the first table's file


def test_a_stop_at_start_leaves_no_table(tmp_path: Path) -> None:
    """The same from outside, as a service manager's stop: SIGTERM as soon as the
    server's handler is in place (its tables being made, or about to be)."""
    config, env = _config(tmp_path)
    args = cli("-c", str(config), "-l", "127.0.0.1:0", "--workers", "2")
    with running(args, env={"AZURE_OPENAI_PROXY_DATABASE": env["AZURE_OPENAI_PROXY_DATABASE"]},
                 ) as process:
        parent = process.popen.pid
        until(lambda: _holds_sighup(parent) or process.popen.poll() is not None, 30)
        process.signal(signal.SIGTERM)
        assert process.popen.wait(30) == 0, process.output()
        assert _tables_of(parent) == [], process.output()
