"""`bench.h2setup --azure-head`'s blocks: Azure's head as bench.paced sends it, its ids and
counts fresh each answer and never indexed (they would fill the peer's table)."""

from __future__ import annotations

import hpack

from bench.h2setup import azure_blocks


def test_each_block_is_azures_head_with_its_own_ids_unindexed() -> None:
    decoder = hpack.Decoder()
    seen: set[str] = set()
    for block in azure_blocks(5):
        head = dict(decoder.decode(block))
        assert head[":status"] == "200" and head["content-type"] == "text/event-stream"
        assert head["x-ms-region"] == "East US"
        fresh = {head[name] for name in ("apim-request-id", "x-request-id",
                                         "x-ratelimit-remaining-requests",
                                         "x-ratelimit-remaining-tokens")}
        assert len(fresh) == 4 and not fresh & seen
        seen |= fresh
        indexed = {bytes(name).decode() for name, _ in decoder.header_table.dynamic_entries}
        assert not indexed & {"apim-request-id", "x-request-id", "x-ms-region"}
