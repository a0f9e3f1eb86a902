"""The usage ledger writer's cost per record, alone (a tool, not a test).

Run: python -m bench.ledgerwriter [--records 20000] [--batch 2000] [--details] [--keys 1]

Records shaped like bench.inprocess's governed requests (a virtual key, a chat
completion with Azure's usage: its counts, or with `--details` the details objects
current api-versions add) are added to a `LedgerWriter` on a SQLite file in a
temporary directory, as fast as a loop can, so the writer drains them in full batches
(`--batch`, as under load: at thousands of requests a second every wake finds a full
batch), then `flush()` waits for them. It prints the writer thread's CPU microseconds per
record. For instructions, count the writer thread alone:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \\
        python -m bench.ledgerwriter --callgrind --records 10000

(the `-02` file is the writer thread: its Ir / records). A first round of records, not
counted, opens the database and prepares the statements, which a running gateway does
once.

`--gil-waits` instead times how long a thread that wants the GIL waits while the writer
drains the records: the main thread sleeps 0.5 ms (letting the GIL go, as the event loop
does in epoll) and times each wake-up past it. Wall-clock: state the load average.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from azure_openai_proxy.gateway.ledger import LedgerWriter
from azure_openai_proxy.governance.budget import BudgetGuard
from azure_openai_proxy.governance.prices import PriceTable
from azure_openai_proxy.observability.record import RequestRecord

_ENDPOINT = "http://127.0.0.1:9/"
_USAGE = {"completion_tokens": 33, "prompt_tokens": 61, "total_tokens": 94}
# Chat's usage as Azure sends it on current api-versions: the counts and both details.
_DETAILED = {**_USAGE,
             "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0,
                                           "reasoning_tokens": 0,
                                           "rejected_prediction_tokens": 0},
             "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0}}


def _records(first: int, count: int, details: bool = False, keys: int = 1,
             ) -> list[RequestRecord]:
    usage = _DETAILED if details else _USAGE
    names = [f"key-{k:016x}" for k in range(keys)]
    return [RequestRecord(f"aop-{n:012x}-0123456789abcdef", "POST", route="chat/completions",
                          model="gpt-4o", deployment="gpt-4o", endpoint=_ENDPOINT, status=200,
                          attempts=1, upstream_ms=0.7, total_ms=1.2, usage=dict(usage),
                          key_id=names[n % keys])
            for n in range(first, first + count)]


def _writer_cpu() -> float:
    for thread in threading.enumerate():
        if thread.name == "ledger-writer" and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


def _callgrind(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=False,
                   capture_output=True)


def measure(records: int, batch: int, callgrind: bool, details: bool = False,
            keys: int = 1) -> float:
    """The writer thread's CPU seconds per record."""
    with tempfile.TemporaryDirectory() as directory:
        writer = LedgerWriter(Path(directory) / "gateway.db", PriceTable.shipped(),
                              {(_ENDPOINT, "gpt-4o"): "gpt-4o"}, BudgetGuard(),
                              batch_size=batch)
        writer.start()
        try:
            for record in _records(0, 2 * batch, details, keys):
                writer.add(record)
            if not writer.flush():
                raise SystemExit("the writer did not write the warm-up records")
            measured = _records(2 * batch, records, details, keys)
            gc.collect()
            if callgrind:
                _callgrind("on")
            started = _writer_cpu()
            for record in measured:
                writer.add(record)
            if not writer.flush(timeout=600):
                raise SystemExit("the writer did not write the records in time")
            spent = _writer_cpu() - started
            if callgrind:
                _callgrind("off")
        finally:
            writer.close()
        if writer.failures:
            raise SystemExit(f"{writer.failures} database failures")
        return spent / records


def gil_waits(records: int, batch: int) -> list[float]:
    """Seconds a sleeping thread's wake-ups came late while the writer drained `records`."""
    with tempfile.TemporaryDirectory() as directory:
        writer = LedgerWriter(Path(directory) / "gateway.db", PriceTable.shipped(),
                              {(_ENDPOINT, "gpt-4o"): "gpt-4o"}, BudgetGuard(),
                              batch_size=batch)
        writer.start()
        try:
            for record in _records(0, 2 * batch):
                writer.add(record)
            writer.flush()
            measured = _records(2 * batch, records)
            done = threading.Event()
            for record in measured:
                writer.add(record)

            def drain() -> None:
                writer.flush(timeout=600)
                done.set()

            threading.Thread(target=drain).start()
            late: list[float] = []
            last = time.perf_counter()
            while not done.is_set():
                time.sleep(0.0005)
                now = time.perf_counter()
                late.append(now - last - 0.0005)
                last = now
        finally:
            writer.close()
        return sorted(late)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=2000, help="the writer's batch size")
    parser.add_argument("--details", action="store_true",
                        help="Azure's usage with its details objects (current api-versions)")
    parser.add_argument("--keys", type=int, default=1,
                        help="the records spread over this many keys, in turn")
    parser.add_argument("--callgrind", action="store_true",
                        help="switch callgrind's instrumentation on for the records only")
    parser.add_argument("--gil-waits", action="store_true",
                        help="time a sleeping thread's late wake-ups while the writer drains")
    args = parser.parse_args(argv)
    if args.gil_waits:
        late = gil_waits(args.records, args.batch)
        print(f"wake-ups {len(late)}, over 1 ms {sum(t > 1e-3 for t in late)}, "
              f"p50 {late[len(late) // 2] * 1e3:.3f} ms, longest {late[-1] * 1e3:.3f} ms")
        return
    per_record = measure(args.records, args.batch, args.callgrind, args.details, args.keys)
    print(f"ledger writer: {per_record * 1e6:.2f} µs CPU per record "
          f"({args.records} records, batches of {args.batch})")


if __name__ == "__main__":
    main()
