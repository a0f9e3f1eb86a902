"""Instructions counted by callgrind: a `python -m` run's total, or one dump's.

The `--count` modes of `bench.h2frame`, `bench.h2setup` and `bench.normalizer_bench` each
run themselves under callgrind at two sizes and take the difference; `bench.realcount`
reads the dumps `callgrind_control` asks a running gateway for."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def dump_total(dump: Path) -> int:
    """The `totals:` instruction count of one callgrind dump."""
    for line in dump.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def module_total(module: str, *args: str) -> int:
    """The instructions of `python -m module args`, start-up included (callgrind)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, "-m", module, *args],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return dump_total(out)
