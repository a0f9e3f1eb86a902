"""The `--workers N` take and settle's instructions: one worker's limiter sharing a table
(governance/sharedlimits.py), no gateway around it, counted under callgrind for the loop
alone (bench/inprocess.py `instrument`):

    valgrind --tool=callgrind --instr-atstart=no python -m bench.sharedver_take --callgrind

A plan taken and settled `--requests` times (`--plan`): `alone`, a key with an RPM and a
TPM limit (a row: the version cell read per take), or `teamed`, such a key in a team
without any limit (a subject without a row: the workers' row's count of rows set read
per take and settle).
Runs on a build without row versions too (then the limits are handed as a mapping), so
that two commits are compared with one script."""

from __future__ import annotations

import argparse
import tempfile
import time

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Admission, RateLimiter
from azure_openai_proxy.governance.sharedlimits import SharedLimits
from bench import inprocess


def _loaded(limits: dict[str, Limits]) -> object:
    try:
        from azure_openai_proxy.governance.loaded import LoadedLimits
    except ImportError:  # a build without versions
        return limits
    return LoadedLimits(limits, 1, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--plan", choices=("alone", "teamed"), default="alone")
    args = parser.parse_args()
    key = Limits(rpm=10**9, tpm=10**12)
    with tempfile.TemporaryDirectory() as directory:
        spec = SharedLimits.create(workers=2, slots=1024, directory=directory)
        table = spec.open(0)
        try:
            limiter = RateLimiter(time.monotonic)
            limiter.share(table)
            limiter.forget(_loaded({"key:a": key, "key:b": key, "team:t": Limits()}))  # type: ignore[arg-type]
            alone = limiter.plan("a", key, None, None)
            teamed = limiter.plan("b", key, "t", Limits())
            for plan in (alone, teamed):  # warm
                taken = limiter.take(plan, 10)
                assert isinstance(taken, Admission)
                limiter.settle(taken, 5)
            for name, plan in (("key alone", alone), ("key + unlimited team", teamed)):
                if not name.startswith("key alone" if args.plan == "alone" else "key +"):
                    continue
                start = time.perf_counter()
                if args.callgrind:
                    inprocess.instrument(True)
                for _ in range(args.requests):
                    taken = limiter.take(plan, 10)
                    limiter.settle(taken, 5)  # type: ignore[arg-type]
                if args.callgrind:
                    inprocess.instrument(False)
                took = time.perf_counter() - start
                print(f"{name}: {args.requests} take+settle, {took / args.requests * 1e6:.2f} µs each")
        finally:
            table.close()
            spec.remove()


if __name__ == "__main__":
    main()
