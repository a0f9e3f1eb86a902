"""`bench.threadcpu gov-journal`: a MEASUREMENT PROTOTYPE of a ledger written by a child
process fed through a journal file (session 28; not the gateway's code, not durable: no
flush timer for the last <256 records, no acknowledgements or resends, no reload of
prices, no spool, no budgets' release of held costs).

The event loop serializes each finished request at `add` while its data is hot (one
orjson line: the RequestRecord and its usage dict are freed at once, nothing retained
but bytes) and writes the lines every 256 records to `<database>.journal-<pid>` (one
write(2) to the page cache: the file is what a durable design would replay after a
crash or SIGTERM). A child process tails the file, rebuilds the records, prices them
(`RowPricer`) and writes them (`LedgerStore.write_rows`): no writer thread's Python
holds the worker's GIL. The writer thread still runs (its maintenance: the budgets'
book), with nothing queued.
"""

import os
import subprocess
import sys

import orjson

from azure_openai_proxy.gateway import ledger

_CHILD = r"""
import math, os, sys, time
from collections import deque
from pathlib import Path
import orjson
from azure_openai_proxy.gateway.ledgerrows import RowPricer
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.store.ledger import LedgerStore
journal, database = sys.argv[1], Path(sys.argv[2])
parent = os.getppid()
store = LedgerStore.open(database, busy_timeout_ms=1000)
pricer = RowPricer(PriceTable.shipped(), {})
fd = os.open(journal, os.O_RDONLY)
rest, days = b"", (-math.inf, -math.inf, "")
while True:
    data = os.read(fd, 1 << 22)
    if not data:
        if os.getppid() != parent:
            break
        time.sleep(0.05)
        continue
    data = rest + data
    cut = data.rfind(b"\n")
    if cut < 0:
        rest = data
        continue
    rest = data[cut + 1:]
    queue = deque()
    for (rid, ended, total, up, status, attempts, stream, key, team, model, dep, ep, route,
         usage) in orjson.loads(b"[" + data[:cut].replace(b"\n", b",") + b"]"):
        queue.append((RequestRecord(rid, "", route=route, model=model, deployment=dep,
                                    endpoint=ep, status=status, attempts=attempts,
                                    upstream_ms=up, total_ms=total, usage=usage,
                                    stream=stream, key_id=key, team_id=team), ended))
    rows = []
    days, _ = pricer.take(queue, len(queue), rows, days, store.label_id)
    store.write_rows(rows, priced=True)
"""
_lines: list[bytes] = []
_open: dict[str, object] = {}
_dumps = orjson.dumps


def _add(self, r, _lines=_lines):  # type: ignore[no-untyped-def]
    _lines.append(_dumps((r.request_id, self._clock(), r.total_ms, r.upstream_ms, r.status,
                          r.attempts, r.stream, r.key_id, r.team_id, r.model, r.deployment,
                          r.endpoint, r.route, r.usage)))
    if len(_lines) >= 256:
        fd = _open.get("fd")
        if fd is None:
            path = f"{self.database}.journal-{os.getpid()}"
            fd = _open["fd"] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
            _open["child"] = subprocess.Popen([sys.executable, "-c", _CHILD, path,
                                               str(self.database)])
        os.write(fd, b"\n".join(_lines) + b"\n")  # type: ignore[arg-type]
        _lines.clear()


ledger.LedgerWriter.add = _add  # type: ignore[method-assign]
