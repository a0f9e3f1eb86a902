"""Which object ids a request refers to, and the bounded memory of who created them."""

from __future__ import annotations

from azure_openai_proxy.gateway.affinity import ResourceAffinity, ids_referenced


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
