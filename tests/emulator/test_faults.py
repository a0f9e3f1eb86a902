from __future__ import annotations

import pytest

from azure_openai_proxy.emulator.faults import FaultBook, parse_fault


def test_defaults_and_counting() -> None:
    book = FaultBook()
    fault = book.add({"deployment": "gpt-4o", "fault": "429", "count": 2})
    assert fault.retry_after == 1.0 and fault.seconds == 30.0 and fault.after_frames == 2
    assert book.take("other") is None
    assert book.take("gpt-4o") is not None
    assert book.pending()[0].count == 1
    assert book.take("gpt-4o") is not None
    assert book.take("gpt-4o") is None and book.pending() == []


def test_wildcard_matches_requests_without_deployment_and_order_is_fifo() -> None:
    book = FaultBook()
    first = book.add({"deployment": "*", "fault": "500"})
    second = book.add({"deployment": "*", "fault": "503"})
    assert first.id != second.id
    taken = book.take(None)
    assert taken is not None and taken.kind == "500"
    book.clear()
    assert book.take("x") is None


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"fault": "429"}, "deployment"),
        ({"deployment": "d", "fault": "404"}, "fault"),
        ({"deployment": "d", "fault": "hang", "seconds": -1}, "seconds"),
        ({"deployment": "d", "fault": "429", "count": 0}, "count"),
        ({"deployment": "d", "fault": "cut", "after_frames": "x"}, "after_frames"),
        ({"deployment": "d", "fault": "cut", "extra": 1}, "extra"),
        ([], "object"),
    ],
)
def test_invalid_fault_names_the_field(body: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_fault("f", body)
