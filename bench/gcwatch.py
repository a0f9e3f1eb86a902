"""The gateway's CLI with its garbage collections counted and timed (bench only).

    python -m bench.gcwatch OUT.json -c gateway.yaml --workers 1

Runs `azure_openai_proxy.cli.main` with a `gc.callbacks` hook that counts the collections
of each generation, the objects they found unreachable (garbage held in reference
cycles), the tracked objects after each gen-2 collection and the CPU time (this thread's)
each took; writes them to OUT.json when the gateway exits (SIGTERM stops it cleanly).
Nothing of this is in the gateway's own request path.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path


class GcWatch:
    """Counts and times each generation's collections."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]  # unreachable objects found: garbage in reference cycles
        self.tracked_after_gen2: list[int] = []
        # (CLOCK_MONOTONIC at the end, generation, CPU seconds, frozen): the driver keeps the
        # collections inside its run's window (the clock is the machine's, not the process's).
        self.events: list[tuple[float, int, float, int]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.thread_time()
            return
        took = time.thread_time() - self._start
        generation = info["generation"]
        self.count[generation] += 1
        self.collected[generation] += info["collected"]
        self.seconds[generation] += took
        self.longest[generation] = max(self.longest[generation], took)
        if len(self.events) < 200_000:  # frozen: 0 until runtime/heap.py has run
            self.events.append((time.monotonic(), generation, took, gc.get_freeze_count()))
        if generation == 2 and len(self.tracked_after_gen2) < 100:
            self.tracked_after_gen2.append(len(gc.get_objects()))

    def report(self) -> dict[str, object]:
        return {"count": self.count, "seconds": self.seconds, "longest_s": self.longest,
                "collected": self.collected,
                "tracked_after_gen2": self.tracked_after_gen2,
                "threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count(),
                "events": self.events}


def main() -> int:
    out = Path(sys.argv[1])
    watch = GcWatch()
    gc.callbacks.append(watch)
    from azure_openai_proxy.cli import main as gateway_main

    try:
        return gateway_main(sys.argv[2:])
    finally:
        gc.callbacks.remove(watch)
        out.write_text(json.dumps(watch.report()))


if __name__ == "__main__":
    raise SystemExit(main())
