"""The ledger store's label ids in memory are bounded (review of session 17, bad
input): with a default endpoint any model name a client sends reaches Azure (a dynamic
deployment), and each name's label was kept for the life of the process (~280 bytes a
name, for ever). Past the bound the ids are looked up again, and stay the same."""

from __future__ import annotations

from pathlib import Path

from azure_openai_proxy.store import ledger
from azure_openai_proxy.store.ledger import LedgerStore


def test_label_ids_are_bounded_in_memory_and_stable(tmp_path: Path) -> None:
    store = LedgerStore.open(tmp_path / "gw.db")
    try:
        def labels(number: int) -> tuple[str, str, str, str, str, str]:
            return ("key_1", "", f"model-{number}", f"model-{number}", "https://e/",
                    "chat/completions")

        first = {number: store.label_id(labels(number)) for number in range(10)}
        for number in range(ledger._KNOWN_LABELS * 2):
            store.label_id(labels(number))
            assert store._labels is not None
            assert len(store._labels) <= ledger._KNOWN_LABELS
        assert {number: store.label_id(labels(number)) for number in range(10)} == first
    finally:
        store.close()
