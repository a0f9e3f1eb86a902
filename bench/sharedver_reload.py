"""CPU a worker's limiter spends on a key change (`RateLimiter.forget`, as the key directory
calls it), with `--workers 2`'s shared table: per change of one key among `--keys`
(`--used` of them planned), a whole read, and one reload changing every key at once.

    python -m bench.sharedver_reload [--keys 50000] [--used 1000] [--rounds 200]

Run from a checkout without `governance/loaded.py` (before session 28) it measures the
change as the directory made it then (a copy of every key's limits); the whole read and
the bulk change need it. Results: bench/README.md, "Session 28"."""

from __future__ import annotations

import argparse
import tempfile
import time

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import RateLimiter
from azure_openai_proxy.governance.sharedlimits import SharedLimits

try:
    from azure_openai_proxy.governance.loaded import LoadedLimits
except ImportError:  # before session 28
    LoadedLimits = None  # type: ignore[assignment,misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--used", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    limits = {f"key:k{n}": Limits(rpm=100, tpm=1000) for n in range(args.keys)}
    spec = SharedLimits.create(workers=2, directory=tempfile.gettempdir())
    try:
        limiter = RateLimiter(time.monotonic)
        limiter.share(spec.open(0))
        limiter.forget(LoadedLimits(limits, 1) if LoadedLimits else dict(limits))
        for n in range(args.used):
            limiter.settle(limiter.take(limiter.plan(f"k{n}", limits[f"key:k{n}"], None, None),
                                        0), 0)  # type: ignore[arg-type]
        one, other = Limits(rpm=100, tpm=1000), Limits(rpm=200, tpm=1000)
        start = time.process_time()
        for number in range(args.rounds):
            limits["key:k5"] = one if number % 2 else other
            limiter.forget(LoadedLimits(limits, number + 2, frozenset({"key:k5"}))
                           if LoadedLimits else dict(limits))
        each = (time.process_time() - start) / args.rounds
        print(f"one key changed: {each * 1e3:.3f} ms CPU a change")
        if LoadedLimits is None:
            return
        start = time.process_time()
        limiter.forget(LoadedLimits(limits, args.rounds + 2, frozenset(), whole=True))
        print(f"a whole read: {(time.process_time() - start) * 1e3:.1f} ms CPU")
        bulk = Limits(rpm=10)
        changed = frozenset(limits)
        for name in changed:
            limits[name] = bulk
        start = time.process_time()
        limiter.forget(LoadedLimits(limits, args.rounds + 3, changed))
        print(f"{len(changed):,} keys changed in one reload: "
              f"{(time.process_time() - start) * 1e3:.0f} ms CPU")
    finally:
        spec.remove()


if __name__ == "__main__":
    main()
