"""The garbage collector's settings for a serving worker.

Measured with `bench/framecpu.py --gc` (bench/README.md, "Where a frame's CPU goes (wall
clock)"): a worker holds about 50,000 tracked objects once started (modules, settings,
the app), and every full collection walked all of them again while 1,000 streams were
open; the young generation's default threshold (700) ran a collection for every few
streams opened. So, once the server listens: one collection, then everything alive is
moved out of the collector's reach for good (`gc.freeze`: objects made at start are never
scanned again), and the young generation collects after `YOUNG_THRESHOLD` net new
objects instead of 700. Reference counting still frees everything that is not in a
cycle at once; only cyclic garbage waits longer.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle_heap"]

YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Freeze what start-up made and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
