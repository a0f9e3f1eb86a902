"""`ChainedContext`: the tokens a `previous_response_id` turn reads again (gateway/chained.py)."""

from __future__ import annotations

from azure_openai_proxy.gateway.chained import MISS_CEILING, ChainedContext


def test_a_responses_usage_or_an_estimate_is_noted_and_read_by_id() -> None:
    chained = ChainedContext()
    chained.note("k1", "resp_1", {"input_tokens": 100, "output_tokens": 20,
                                  "total_tokens": 120})
    chained.note("k1", "resp_2", {"prompt_tokens": 7, "completion_tokens": 3,
                                  "estimated": True})
    chained.note("k1", "resp_3", {"input_tokens": -5, "output_tokens": None})  # nothing to note
    chained.note("k1", "resp_4", None)
    assert chained.reserve({"previous_response_id": "resp_1", "input": "x"}, "k1") == 120
    assert chained.reserve({"previous_response_id": "resp_2"}, "k1") == 10
    for body in ({"previous_response_id": ["resp_1"]}, {"input": "x"}, None):
        assert chained.reserve(body, "k1") == 0
    # nothing noted: not known, so guessed (gateway/chained.py)
    for body in ({"previous_response_id": "resp_3"}, {"previous_response_id": "resp_4"}):
        assert chained.reserve(body, "k1") == MISS_CEILING


def test_a_conversation_holds_what_its_last_turn_read_and_wrote() -> None:
    chained = ChainedContext()
    chained.note("k1", "resp_1", {"input_tokens": 100, "output_tokens": 20},
                 {"conversation": "conv_1", "input": "x"})
    assert chained.reserve({"conversation": "conv_1"}, "k1") == 120
    chained.note("k1", "resp_2", {"input_tokens": 150, "output_tokens": 30},
                 {"conversation": {"id": "conv_1"}})
    assert chained.reserve({"conversation": {"id": "conv_1"}}, "k1") == 180
    assert chained.reserve({"conversation": "conv_2"}, "k1") == MISS_CEILING
    assert chained.reserve({"conversation": {"id": 7}}, "k1") == 0


def test_a_turns_reasoning_is_not_read_again() -> None:
    """A reasoning model's reasoning is billed as output and dropped after its turn: the
    next turn's context is the input and the visible output."""
    chained = ChainedContext()
    chained.note("k1", "resp_1", {"input_tokens": 100, "output_tokens": 20_050,
                                  "output_tokens_details": {"reasoning_tokens": 20_000}})
    chained.note("k1", "resp_2", {"prompt_tokens": 10, "completion_tokens": 5,
                                  "completion_tokens_details": {"reasoning_tokens": 3}})
    chained.note("k1", "resp_3", {"input_tokens": 10, "output_tokens": 5,
                                  "output_tokens_details": {"reasoning_tokens": 99}})  # odd: not < 0
    assert chained.reserve({"previous_response_id": "resp_1"}, "k1") == 150
    assert chained.reserve({"previous_response_id": "resp_2"}, "k1") == 12
    assert chained.reserve({"previous_response_id": "resp_3"}, "k1") == MISS_CEILING
