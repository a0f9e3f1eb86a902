"""The chained-context counts the workers of one server share
(governance/sharedcontext.py): what one worker notes, another reads, per key; a full
table replaces rows instead of failing; a table that fails is "not known", never an
error."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from azure_openai_proxy.gateway.chained import MISS_CEILING, ChainedContext, GuessedContext
from azure_openai_proxy.governance.sharedcontext import (
    CONTEXT_COLUMNS,
    SharedContext,
    context_table,
)
from azure_openai_proxy.governance.sharedlimits import SharedLimits

_USAGE = {"input_tokens": 100, "output_tokens": 20}


@pytest.fixture
def spec(tmp_path: Path) -> Iterator[SharedLimits]:
    table = context_table(2, directory=str(tmp_path))
    yield table
    table.remove()


def _worker(spec: SharedLimits, number: int) -> ChainedContext:
    chained = ChainedContext()
    chained.share(SharedContext(spec.open(number)))
    return chained


def test_a_turn_on_another_worker_reads_what_the_first_noted(spec: SharedLimits) -> None:
    one, other = _worker(spec, 0), _worker(spec, 1)
    one.note("k1", "resp_1", _USAGE, {"conversation": "conv_1"})
    one.started("k1", "conv_2", {"items": [{"type": "message", "role": "user",
                                            "content": "x" * 400}]})
    got = other.reserve({"previous_response_id": "resp_1"}, "k1")
    assert got == 120 and type(got) is int  # a count, not a guess
    assert other.reserve({"conversation": {"id": "conv_1"}}, "k1") == 120
    assert 0 < other.reserve({"conversation": "conv_2"}, "k1") < MISS_CEILING
    # the later turn's count replaces the earlier one for every worker, the one that
    # noted the earlier (and keeps it) too
    other.note("k1", "resp_2", {"input_tokens": 300, "output_tokens": 40},
               {"conversation": "conv_1"})
    assert one.reserve({"conversation": "conv_1"}, "k1") == 340
    assert one.reserve({"previous_response_id": "resp_2"}, "k1") == 340
    one.note("k1", "resp_3", {"input_tokens": 500, "output_tokens": 60},
             {"conversation": "conv_1"})
    assert other.reserve({"conversation": {"id": "conv_1"}}, "k1") == 560


def test_a_conversation_started_on_one_worker_grows_on_another(spec: SharedLimits) -> None:
    one, other = _worker(spec, 0), _worker(spec, 1)
    one.started("k1", "conv_1", {"items": [{"type": "message", "role": "user",
                                            "content": "x"}]})
    assert other.reserve({"conversation": "conv_1"}, "k1") == 1
    other.note("k1", "resp_1", {"input_tokens": 9000, "output_tokens": 1000},
               {"conversation": "conv_1"})
    assert one.reserve({"conversation": "conv_1"}, "k1") == 10_000


def test_what_the_database_kept_never_replaces_a_newer_count(spec: SharedLimits) -> None:
    one, other = _worker(spec, 0), _worker(spec, 1)
    other.note("k1", "resp_9", _USAGE, {"conversation": "conv_1"})  # noted meanwhile
    one.learn("k1", "conv_1", 7)  # an older count read back from the database
    assert one.reserve({"conversation": "conv_1"}, "k1") == 120
    one.learn("k1", "conv_2", 7)  # known nowhere: learnt, and shared
    assert other.reserve({"conversation": "conv_2"}, "k1") == 7


def test_another_keys_turn_never_reads_them(spec: SharedLimits) -> None:
    one, other = _worker(spec, 0), _worker(spec, 1)
    one.note("k1", "resp_1", _USAGE)
    guessed = other.reserve({"previous_response_id": "resp_1"}, "k2")
    assert type(guessed) is GuessedContext and guessed == MISS_CEILING


def test_without_the_table_another_worker_guesses() -> None:
    """What `--workers N` did before: each worker's table its own."""
    one, other = ChainedContext(), ChainedContext()
    one.note("k1", "resp_1", _USAGE)
    assert type(other.reserve({"previous_response_id": "resp_1"}, "k1")) is GuessedContext


def test_a_full_table_replaces_rows_and_keeps_the_newest(tmp_path: Path) -> None:
    small = SharedLimits.create(2, slots=8, directory=str(tmp_path), fixed=CONTEXT_COLUMNS)
    try:
        writer, reader = SharedContext(small.open(0)), SharedContext(small.open(1))
        for number in range(100):
            writer.put("k1", f"resp_{number}", number + 1)
            assert reader.get("k1", f"resp_{number}") == number + 1
        assert sum(reader.get("k1", f"resp_{n}") is not None for n in range(100)) <= 8
    finally:
        small.remove()


def test_counts_a_double_cannot_hold_are_not_written(spec: SharedLimits) -> None:
    shared = SharedContext(spec.open(0))
    shared.put("k1", "resp_1", 2**60)
    shared.put("k1", "resp_2", -1)
    assert shared.get("k1", "resp_1") is None and shared.get("k1", "resp_2") is None


def test_a_failing_table_is_not_known_and_said_once(
        spec: SharedLimits, caplog: pytest.LogCaptureFixture) -> None:
    table = spec.open(0)
    chained = ChainedContext()
    chained.share(SharedContext(table))
    table.close()  # its mapping and descriptor gone: every use raises
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        chained.note("k1", "resp_1", _USAGE)  # noted here all the same
        assert chained.reserve({"previous_response_id": "resp_1"}, "k1") == 120
        guessed = chained.reserve({"previous_response_id": "resp_9"}, "k1")
    assert type(guessed) is GuessedContext
    assert caplog.text.count("shared chained-context table failed") == 1
