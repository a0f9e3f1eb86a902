"""A journal left by a killed worker ends up in the database whichever writer the
workers after it run (gateway/ledger.py `_claim_dead`, ledgerclaim.py): here the thread
writer, which claimed none before (session 31). Real gateway processes, 2 workers, a
worker and then the whole gateway SIGKILLed while the database is locked (the journal
children could write nothing: the records wait in the journals)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from azure_openai_proxy.gateway.journalfiles import segment_path, segments
from tests.e2e.conftest import CLIENT_KEY
from tests.e2e.pools import pool_config, pool_emulator
from tests.e2e.test_reload_shutdown import gateway_process
from tests.waiting import until

pytestmark = pytest.mark.slow  # (two gateways of two workers, their journal children)


def _load(port: int, requests: int) -> int:
    """`requests` chat calls from 4 threads; how many were answered (200)."""
    answered = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal answered
        with httpx.Client(timeout=30) as http:
            for _ in range(requests // 4):
                response = http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                    json={"model": "gpt-4o", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "load"}]})
                if response.status_code == 200:
                    with lock:
                        answered += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answered


def _journalled(database: Path) -> int:
    """The record lines in the database's journals."""
    count = 0
    for lock in database.parent.glob(database.name + ".journal-*.lock"):
        prefix = str(lock)[:-len(".lock")]
        for number in segments(prefix):
            with open(segment_path(prefix, number), "rb") as file:
                count += sum(line.startswith(b"[") for line in file)
    return count


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _rows(database: Path) -> tuple[int, int]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT count(*), count(DISTINCT request_id) FROM usage_records "
                          "WHERE status = 200").fetchone()  # type: ignore[no-any-return]


def _config(path: Path, url: str, database: Path, writer: str) -> None:
    path.write_text(yaml.safe_dump({
        **pool_config(url, [("dep-a", {})]), "database": f"sqlite:///{database}",
        "log_level": "warning", "ledger_writer": writer, "shutdown_grace_seconds": 10}))


@pytest.mark.timeout(240)  # (two gateway starts, a locked database's waits, a busy machine)
def test_a_killed_workers_journal_is_written_by_thread_writers_after_it(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    database = tmp_path / "gw.db"
    with pool_emulator(token_ms=2) as emulator:
        _config(config, emulator.url, database, "journal")
        with gateway_process(config, "--workers", "2") as (process, client):
            _load(client.port, 8)  # the database made and in use
            lock = sqlite3.connect(database, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")  # the children write nothing from now on
            try:
                answered = _load(client.port, 200)
                # (every line of the segments: the first 8's too, written or not)
                until(lambda: _journalled(database) == answered + 8, 20,
                      "the records never reached the journals")
                workers = _children(process.popen.pid)
                killed = next(w for w in workers if _children(w))  # one with its child
                for pid in [killed, *_children(killed)]:
                    os.kill(pid, signal.SIGKILL)
                os.killpg(process.popen.pid, signal.SIGKILL)  # and then all the rest
                process.popen.wait(10)
            finally:
                lock.execute("ROLLBACK")
                lock.close()
        before = _rows(database)[0]
        assert before < answered + 8  # (the first 8, perhaps; none of the locked load's)
        _config(config, emulator.url, database, "thread")
        with gateway_process(config, "--workers", "2") as (process, client):
            answered += _load(client.port, 40)
            until(lambda: _rows(database)[0] >= answered + 8, 30,
                  "the killed gateway's journals were never written")
            process.signal(signal.SIGTERM)
            assert process.popen.wait(30) == 0, process.output()
    assert answered == 240
    assert _rows(database) == (answered + 8, answered + 8)
    assert list(tmp_path.glob("gw.db.journal-*")) == []
