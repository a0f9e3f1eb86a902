"""A stop (SIGTERM) while another process holds the database's write lock (the CLI's
write, a backup, `sqlite3` left in a transaction): the usage ledger's writer waited its
busy timeout at each step of its last passes (the queued records' write, the spool's
replay, `close`'s own pass: 4-5 s here) before it spooled them and the worker exited.
A ledger store now waits for a lock held elsewhere once per busy timeout: the steps
after a wait that ended busy fail at once, so the stop takes one wait, and the records
go to the spool as designed (nothing lost: the next start writes them).

Each writer gives its stores one `LockWaits` (store/sqlite.py): it opens a new store
after each failure (session 30's integration review wired it: before, 4-5 s). Both
writers: the default journal child (at the stop the worker kills it and writes the
rest itself with up to 8 MB left), and the thread writer.

The real server and a real lock holder, in real processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_reload_shutdown import write_config
from tests.e2e.test_workerlife_edges import UNREACHABLE
from tests.processes import ROOT, cli
from tests.unit.test_storeleft2_lock_waits import _locked

_REQUESTS = 3


def _secret(made: str) -> str:
    return next(line.split()[1] for line in made.splitlines() if line.startswith("key: "))


def _ask(port: int, secret: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=b'{"model":"dep-a","messages":[{"role":"user","content":"hi"}]}',
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as exc:  # (upstream unreachable: 502, recorded)
        exc.close()


def _recorded(database: Path) -> int:
    with sqlite3.connect(database) as raw:
        return int(raw.execute("SELECT count(*) FROM usage_records").fetchone()[0])


@pytest.mark.parametrize("writer", [None, "thread"])  # None: the default (journal)
def test_a_stop_while_the_database_is_locked_takes_one_busy_wait(
        tmp_path: Path, writer: str | None) -> None:
    database = tmp_path / "g.db"
    config = tmp_path / "config.yaml"
    write_config(config, UNREACHABLE, [("dep-a", {})])
    env = {**os.environ, "AZURE_OPENAI_PROXY_DATABASE": f"sqlite:///{database}",
           "PYTHONUNBUFFERED": "1"}
    env.pop("AZURE_OPENAI_PROXY_LEDGER_WRITER", None)
    if writer is not None:
        env["AZURE_OPENAI_PROXY_LEDGER_WRITER"] = writer
    made = subprocess.run(cli("keys", "create", "--name", "a"), env=env, check=True,
                          capture_output=True, text=True, timeout=60)
    secret = _secret(made.stdout)
    server = subprocess.Popen(cli("-c", str(config), "-l", "127.0.0.1:0"), env=env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        assert server.stdout is not None
        head = []
        for line in server.stdout:
            head.append(line)
            if "listening on" in line:
                break
        port = int(head[-1].split("http://127.0.0.1:")[1].split()[0])
        # Locked first: the records are still queued (or spooled) at the stop.
        with _locked(database):  # another process's write lock
            for _ in range(_REQUESTS):
                _ask(port, secret)
            stopped = time.monotonic()
            server.send_signal(signal.SIGTERM)
            output, _ = server.communicate(timeout=60)
            took = time.monotonic() - stopped
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    output = "".join(head) + output
    assert server.returncode == 0 and "Traceback" not in output, output
    # One busy wait (the ledger's 1 s) and the rest; main: 4-5 s (a wait per step).
    assert took < 2.5, (took, output)
    if writer == "thread":
        assert "records go to" in output, output  # spooled, as designed
        spool = database.with_name(database.name + ".spool.jsonl")
        spooled = [json.loads(line) for line in spool.read_text().splitlines() if line]
        assert len(spooled) + _recorded(database) == _REQUESTS, (spooled, output)
    else:  # the journal keeps them (since session 31, not the spool) for the next start
        assert "the records wait in the journal" in output, output
        journalled = sum(line.startswith(b"[") for segment in
                         tmp_path.glob("g.db.journal-*.0*") for line in segment.open("rb"))
        assert journalled + _recorded(database) == _REQUESTS, (journalled, output)
