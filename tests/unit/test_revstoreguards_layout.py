"""A worker of this build maps a table made by a parent of session 28's build (layout 1).

storeguards moved `LAYOUT` to 2 for the workers' row's `REWINDS`, a cell no build before
used: after an upgrade in place, a worker replaced under the old parent then mapped none
of the three tables (rate limits, budget holds, chained contexts) and counted them alone
until the server restarted: with N workers a key got up to N times its limits. The cell
being one an older build neither reads nor writes, the layout is the same."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

from azure_openai_proxy.governance.sharedlimits import REWINDS, VERSION
from azure_openai_proxy.governance.sharedrows import note_reload
from azure_openai_proxy.runtime.workers import SharedTables


def test_a_replaced_worker_maps_the_tables_of_session_28s_parent(tmp_path: Path) -> None:
    made = SharedTables.create(workers=2, directory=str(tmp_path))
    try:
        assert made.limits is not None and made.holds is not None and made.context is not None
        # As session 28's parent pickled them to its workers: layout 1.
        older = SharedTables(*(dataclasses.replace(spec, layout=1)
                               for spec in (made.limits, made.holds, made.context)))
        opened = pickle.loads(pickle.dumps(older)).open(1)
        assert None not in opened  # storeguards: (None, None, None), counted alone
        limits = opened[0]
        assert limits is not None
        # The rewinds' cell is one of the workers' row's that row's other users leave
        # alone (the per-worker columns come after the fixed ones, VERSION is another).
        assert made.limits.fixed > REWINDS and REWINDS != VERSION
        note_reload(limits, rewound=True)
        assert limits.cells[made.limits.workers_row + REWINDS] == 1.0
        for table in opened:
            assert table is not None
            table.close()
    finally:
        made.remove()
