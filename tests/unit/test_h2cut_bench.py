"""`bench/h2frame.py` relays what it counts: every stream's every content token reaches
its client, however many DATA frames a read carries (so its instruction counts are of
the real relay, not of a stream that failed early)."""

from __future__ import annotations

import asyncio

import pytest

from bench.h2frame import relay_streams


@pytest.mark.parametrize("per_read", [1, 3])
def test_every_content_token_reaches_its_client(per_read: int) -> None:
    written, tokens = asyncio.run(relay_streams(content=23, streams=4, per_read=per_read))
    assert tokens == 4 * 23
    assert written > 4 * 23 * 300  # each content frame is ~450 bytes to the client
