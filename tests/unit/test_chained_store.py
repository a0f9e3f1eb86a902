"""The chained-context counts kept in the governance database (store/ownership.py
`chained_context`), so a turn after a restart counts its predecessor: per key, the
latest count wins, and rows older than Azure keeps a response are removed."""

from __future__ import annotations

from pathlib import Path

from azure_openai_proxy.store.ownership import CONTEXT_DAYS, OwnerStore

_DAY = 86400.0


def test_counts_are_per_key_and_the_latest_wins(tmp_path: Path) -> None:
    store = OwnerStore.open(tmp_path / "gw.db")
    try:
        store.note_contexts("k1", [("resp_1", 120), ("conv_1", 120)], now=1000.0)
        store.note_contexts("k1", [("conv_1", 340)], now=1001.0)
        assert store.contexts("k1", ["resp_1", "conv_1", "resp_9"]) == {
            "resp_1": 120, "conv_1": 340}
        assert store.contexts("k2", ["resp_1", "conv_1"]) == {}
    finally:
        store.close()
    again = OwnerStore.open(tmp_path / "gw.db")  # as a restarted gateway opens it
    try:
        assert again.contexts("k1", ["resp_1"]) == {"resp_1": 120}
    finally:
        again.close()


def test_rows_older_than_azure_keeps_a_response_are_removed(tmp_path: Path) -> None:
    store = OwnerStore.open(tmp_path / "gw.db")
    try:
        start = 1_800_000_000.0
        store.note_contexts("k1", [("resp_old", 5)], now=start)
        store.note_contexts("k1", [("resp_new", 7)], now=start + (CONTEXT_DAYS - 1) * _DAY)
        assert store.contexts("k1", ["resp_old", "resp_new"]) == {"resp_old": 5,
                                                                  "resp_new": 7}
        store.note_contexts("k1", [("resp_last", 9)], now=start + (CONTEXT_DAYS + 1) * _DAY)
        assert store.contexts("k1", ["resp_old", "resp_new", "resp_last"]) == {
            "resp_new": 7, "resp_last": 9}
    finally:
        store.close()
