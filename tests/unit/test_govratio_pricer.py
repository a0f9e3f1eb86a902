"""The writer's pricer tells chat's usage apart by its number of keys before it looks
for the details objects (gateway/ledgerrows.py `RowPricer.take`), and reads the
`estimated` flag with `in` and indexing instead of `get`. These hold it to the general
reading on the shapes where those shortcuts decide: two, three, four and more keys,
with and without `total_tokens`, and `estimated` present with any truth value."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from azure_openai_proxy.gateway.ledger import usage_record
from azure_openai_proxy.governance.prices import PriceTable, count_tokens
from azure_openai_proxy.observability.record import RequestRecord

_TABLE = PriceTable.shipped()
_COUNT = st.one_of(st.integers(0, 5000), st.none(), st.booleans(), st.floats(0, 10),
                   st.integers(-3, -1), st.just(2**40))
_FLAG = st.one_of(st.booleans(), st.none(), st.just(0), st.just(1), st.just(""),
                  st.just("no"), st.just([]), st.just({}))
_DETAILS = st.one_of(st.none(), st.just({}), st.just([]),
                     st.fixed_dictionaries({}, optional={"cached_tokens": _COUNT,
                                                         "audio_tokens": _COUNT}))
_MORE = st.one_of(st.none(), st.just({}),
                  st.fixed_dictionaries({}, optional={"reasoning_tokens": _COUNT}))
_USAGE = st.fixed_dictionaries(
    {"prompt_tokens": _COUNT, "completion_tokens": _COUNT},
    optional={"total_tokens": _COUNT, "estimated": _FLAG, "prompt_tokens_details": _DETAILS,
              "completion_tokens_details": _MORE, "extra": st.just(1)})


def _record(usage: dict[str, Any]) -> RequestRecord:
    return RequestRecord("req-1", "POST", route="chat/completions", model="gpt-4o",
                         deployment="gpt-4o", endpoint="https://e/", status=200,
                         total_ms=10.0, usage=usage)


@settings(max_examples=600, deadline=None)
@given(usage=_USAGE)
def test_the_pricer_reads_every_size_of_chat_usage_as_count_tokens(usage: dict[str, Any]) -> None:
    written = usage_record(_record(usage), 1_796_212_800.0, _TABLE, {})
    assert (written.prompt_tokens, written.cached_tokens, written.completion_tokens,
            written.reasoning_tokens) == count_tokens(usage)
    assert written.usage_source == ("estimated" if usage.get("estimated") else "measured")
    assert (written.cost_usd, written.priced) == _TABLE.usage_cost(["gpt-4o"], usage)


def test_the_shapes_at_the_size_boundary() -> None:
    """Two keys, three with or without the total, four with the total and a flag:
    the counts path only where nothing else could be read."""
    shapes: list[dict[str, Any]] = [
        {"prompt_tokens": 5, "completion_tokens": 2},
        {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        {"prompt_tokens": 5, "completion_tokens": 2, "estimated": True},
        {"prompt_tokens": 5, "completion_tokens": 2, "estimated": 0},
        {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "estimated": "yes"},
        {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
         "prompt_tokens_details": {"cached_tokens": 3}},
        {"prompt_tokens": 5, "completion_tokens": 2, "estimated": [],
         "prompt_tokens_details": {"cached_tokens": 3},
         "completion_tokens_details": {"reasoning_tokens": 1}},
        {"prompt_tokens": 5, "completion_tokens": 2, "estimated": 1,
         "prompt_tokens_details": {"cached_tokens": 3},
         "completion_tokens_details": {"reasoning_tokens": 1}},
    ]
    sources = []
    for usage in shapes:
        written = usage_record(_record(usage), 1_796_212_800.0, _TABLE, {})
        assert (written.prompt_tokens, written.cached_tokens, written.completion_tokens,
                written.reasoning_tokens) == count_tokens(usage)
        sources.append(written.usage_source)
    assert sources == ["measured", "measured", "estimated", "measured", "estimated",
                       "measured", "measured", "estimated"]
