"""Request ids for the ledger (gateway/pipeline.py `Gateway.new_record`)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable


def request_id_source() -> Callable[[], str]:
    """Unique request ids without a system call each: a random per-process prefix and a
    counter (formatted by a C iterator: no Python frame per id). 64 bits: the ledger
    keeps a record per id; with 32, 2 of 100,000 worker starts shared one (P ~70%)."""
    prefix = os.urandom(8).hex()
    return map(f"{prefix}{{:08x}}".format, itertools.count(1)).__next__

