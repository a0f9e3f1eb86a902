"""Which object ids a request refers to, and the bounded memory of who created them."""

from __future__ import annotations

import pytest

from azure_openai_proxy.gateway.affinity import ReferenceKeyCased, ResourceAffinity, ids_referenced


def test_ids_from_paths_and_bodies() -> None:
    assert ids_referenced("files/file-1/content", None) == ["file-1"]
    assert ids_referenced("batches/batch_2/cancel", None) == ["batch_2"]
    assert ids_referenced("responses/resp_3", None) == ["resp_3"]
    assert ids_referenced("files", None) == []
    assert ids_referenced("batches", {"input_file_id": "file-9", "endpoint": "/v1/x"}) == ["file-9"]
    assert ids_referenced("responses", {"previous_response_id": "resp_1", "model": "m"}) == ["resp_1"]
    assert ids_referenced("responses", {"previous_response_id": 5}) == []
    # A fine-tuning job goes where its training file is (it exists on one resource).
    assert ids_referenced("fine_tuning/jobs", {"training_file": "f"}) == ["f"]


def test_remember_and_find_the_first_known_id() -> None:
    affinity = ResourceAffinity()
    affinity.remember("file-1", ("https://east", "gpt-4o"))
    assert affinity.home_of(["unknown", "file-1"]) == ("https://east", "gpt-4o")
    assert affinity.home_of(["unknown"]) is None


def test_homes_recorded_with_owners_are_learnt_and_say_whether_any_was_new() -> None:
    """What another worker recorded (gateway/ownership.py) is learnt: new here, or here
    with another home (the database's wins), then routed by; known already, nothing to
    route again."""
    affinity = ResourceAffinity()
    east, west = ("https://east", "gpt-4o"), ("https://west", "gpt-4o")
    affinity.remember("resp-1", east)
    assert not affinity.learn([])
    assert not affinity.learn([("resp-1", east)])
    assert affinity.learn([("resp-1", east), ("file-2", west)])
    assert affinity.home_of(["file-2"]) == west and affinity.home_of(["resp-1"]) == east
    assert affinity.learn([("resp-1", west)])
    assert affinity.home_of(["resp-1"]) == west


def test_least_recently_used_ids_are_forgotten() -> None:
    affinity = ResourceAffinity(capacity=2)
    affinity.remember("a", ("e", "d1"))
    affinity.remember("b", ("e", "d2"))
    assert affinity.home_of(["a"]) == ("e", "d1")  # touching "a" keeps it
    affinity.remember("c", ("e", "d3"))
    assert len(affinity) == 2
    assert affinity.home_of(["b"]) is None
    assert affinity.home_of(["a"]) == ("e", "d1")


def test_a_recorder_remembers_ids_at_its_home() -> None:
    affinity = ResourceAffinity()
    record = affinity.recorder(("https://west", "gpt-4o"))
    record("resp_1")
    assert affinity.home_of(["resp_1"]) == ("https://west", "gpt-4o")


def test_a_checked_body_naming_a_reference_in_other_letters_is_refused() -> None:
    for body in ({"Previous_Response_Id": "resp_1"}, {"FILE_IDS": ["file-1"]},
                 {"input": [{"role": "user", "content": [{"type": "input_file",
                                                          "f\u0131le_id": "file-1"}]}]},
                 {"tools": [{"Type": "file_search", "vector_store_ids": ["vs_1"]}]},
                 {"conversation": {"ID": "conv_1"}}, {"Input": "hi"}):
        with pytest.raises(ReferenceKeyCased):
            ids_referenced("responses", body, strict=True)
    # Not strict (affinity's look-up): the ids found, nothing refused.
    assert ids_referenced("responses", {"Previous_Response_Id": "resp_1",
                                        "previous_response_id": "resp_2"}) == ["resp_2"]
    # The exact names, other names in capitals, and opaque fields pass as before.
    assert ids_referenced("responses", {
        "previous_response_id": "resp_1", "Temperature": 1, "metadata": {"File_Id": "x"},
        "text": {"format": {"type": "json_schema", "schema": {"ID": {"type": "string"}}}},
    }, strict=True) == ["resp_1"]
