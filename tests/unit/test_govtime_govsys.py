"""bench/govsys.py's variants, applied in a worker by the `sitecustomize` it writes: they
must still find what they patch (a rename would stop every gateway it starts), and do
what they say: `+noledger` keeps no record, `+spinN` spends at least N µs per request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.govsys import SITECUSTOMIZE

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import time, types
from azure_openai_proxy.gateway import ledger, pipeline
gateway = types.SimpleNamespace(_request_ids=lambda: "req-1")
start = time.perf_counter()
record = pipeline.Gateway.new_record(gateway, "POST")
spent = time.perf_counter() - start
add = ledger.LedgerWriter.add
added = add(types.SimpleNamespace(), record) if add.__qualname__ == "<lambda>" else "-"
print(record.method, record.request_id, int(spent * 1e6), added,
      pipeline.Gateway.new_record.__qualname__, add.__qualname__)
"""


def probe(tmp_path: Path, **env: str) -> list[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    environ = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", **env}
    done = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_spin_spends_at_least_its_microseconds_per_record(tmp_path: Path) -> None:
    method, request_id, spent, *_ = probe(tmp_path, GOVSYS_SPIN_US="20000", GOVSYS_NOLEDGER="1")
    assert (method, request_id) == ("POST", "req-1")  # the record is still made
    assert int(spent) >= 20000


def test_noledger_replaces_add_with_one_that_keeps_nothing(tmp_path: Path) -> None:
    *_, added, new_record, add = probe(tmp_path, GOVSYS_SPIN_US="", GOVSYS_NOLEDGER="1")
    # The writer given is an empty namespace: an `add` that touched it would raise.
    assert (added, add, new_record) == ("None", "<lambda>", "Gateway.new_record")


def test_without_variants_nothing_is_patched(tmp_path: Path) -> None:
    *_, added, new_record, add = probe(tmp_path, GOVSYS_SPIN_US="", GOVSYS_NOLEDGER="")
    assert (added, new_record, add) == ("-", "Gateway.new_record", "LedgerWriter.add")
