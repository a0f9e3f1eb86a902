"""Keys edited without any limit take a row each (up to `ROWS_PER_RELOAD`, 64, a
reload: sharedrows.py `set_rows`), a row saying they have none, so that a worker that
read a version between with a limit, and has not planned the key yet, follows the
removal instead of counting by it (session 28: without those rows the differential
test differed in 19 of 10,000 runs). Looked at in session 29: not a defect. Such a row
holds nothing in flight and no bucket (its stamps are 0), so it is idle at once
(`SharedTable._idle`) and goes to the first limited key that finds no free row in its
probes: a table full of them keeps no limited key out. This pins it (it held on main
too)."""

from __future__ import annotations

from azure_openai_proxy.governance.loaded import LoadedLimits
from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimit import Refusal
from tests.unit.sharedworkers import SharedWorkers
from tests.unit.test_sharedlimits import admitted
from tests.unit.test_sharedlimits_rows import _tagged_rows


def test_rows_of_keys_edited_without_limits_keep_no_limited_key_out(
        shared: SharedWorkers) -> None:
    spec, clock, first, second = shared.pair(slots=8)
    none = Limits()
    edited = {f"key:e{n}": none for n in range(8)}
    for limiter in (first, second):
        limiter.forget(LoadedLimits(edited, 1, None))  # the first read: no rows
    first.forget(LoadedLimits(edited, 2, frozenset(edited)))  # every one edited
    assert _tagged_rows(spec) == 8  # the whole table: a row each, saying "none"
    limited = Limits(rpm=1)
    keys = edited | {"key:k": limited}
    for limiter in (first, second):
        limiter.forget(LoadedLimits(keys, 3, frozenset({"key:k"})))
    admitted(first.take(first.plan("k", limited, None, None), 0))
    refused = second.take(second.plan("k", limited, None, None), 0)
    assert isinstance(refused, Refusal) and refused.kind == "requests"  # one row, shared
    assert clock.now == 1000.0  # (no time passed: the rows were idle at once)
