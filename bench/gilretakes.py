"""A thread's GIL re-takes, from a callgrind output file (a tool, not a test).

    PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes \\
        python -m bench.ledgerwriter --callgrind --records 10000
    python -m bench.gilretakes callgrind.out.<pid>-02        # the writer thread's file

Prints how many times the thread took the GIL back (calls of CPython's `take_gil`) and
how many of those `PyEval_RestoreThread` calls each C function made: in the ledger
writer, `_pysqlite_query_execute` (the sqlite3 module lets the GIL go around its steps:
~5 a statement run), `time_sleep` (the pauses between priced chunks), the fetches. Each
is a turn the thread waits for while the event loop has the GIL (session 22, session 28
in bench/README.md).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_NAME = re.compile(r"(c?fn)=\((\d+)\)(?: (.*))?")


def retakes(path: Path) -> tuple[int, Counter[str]]:
    """(calls of take_gil, PyEval_RestoreThread calls by calling function)."""
    names: dict[str, str] = {}
    current = ""
    taken = 0
    callers: Counter[str] = Counter()
    lines = path.read_text(errors="replace").splitlines()
    for index, line in enumerate(lines):
        match = _NAME.match(line)
        if match is None:
            continue
        kind, ident, name = match.groups()
        if name:
            names[ident] = name
        if kind == "fn":
            current = names.get(ident, "")
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if not following.startswith("calls="):
            continue
        calls = int(following.split("=", 1)[1].split()[0])
        callee = names.get(ident, "")
        if callee == "take_gil":
            taken += calls
        elif callee == "PyEval_RestoreThread":
            callers[current] += calls
    return taken, callers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="a callgrind output file (one thread's)")
    parser.add_argument("--most", type=int, default=8, help="callers listed")
    args = parser.parse_args()
    taken, callers = retakes(args.file)
    print(f"take_gil: {taken} calls")
    for name, calls in callers.most_common(args.most):
        print(f"  {calls:8d}  PyEval_RestoreThread from {name}")


if __name__ == "__main__":
    main()
