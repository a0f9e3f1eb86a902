from __future__ import annotations

import pytest

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.versions import (
    DATED_VERSIONS,
    dated_version,
    operation_available,
    v1_version,
)


def test_known_versions_include_ga_and_every_listed_preview() -> None:
    for version in ("2022-12-01", "2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21",
                    "2023-03-15-preview", "2023-12-01-preview", "2024-12-01-preview",
                    "2025-04-01-preview"):
        assert version in DATED_VERSIONS
    assert "2025-05-01-preview" not in DATED_VERSIONS


@pytest.mark.parametrize("raw", [None, "", "2024-10-22", "v1", "latest"])
def test_missing_or_unknown_dated_version_is_404(raw: str | None) -> None:
    with pytest.raises(wire_errors.AzureError) as caught:
        dated_version(raw)
    assert caught.value.status == 404
    assert caught.value.body == {"error": {"code": "404", "message": "Resource not found"}}


def test_dated_version_on_v1_is_400() -> None:
    with pytest.raises(wire_errors.AzureError) as caught:
        v1_version("2024-10-21")
    assert caught.value.status == 400
    assert caught.value.body == {
        "error": {"code": "BadRequest", "message": "API version not supported"}
    }
    assert v1_version(None).is_v1 and v1_version("preview").preview


def test_filter_key_by_version() -> None:
    assert dated_version("2023-05-15").filter_results_key is None
    assert dated_version("2023-07-01-preview").filter_results_key == "prompt_annotations"
    assert dated_version("2023-09-01-preview").filter_results_key == "prompt_filter_results"
    assert v1_version(None).filter_results_key == "prompt_filter_results"


def test_error_shape_switches_at_2024_09_01_preview() -> None:
    assert not dated_version("2024-08-01-preview").new_error_shape
    assert dated_version("2024-09-01-preview").new_error_shape
    assert dated_version("2024-10-21").new_error_shape


def test_operation_availability() -> None:
    assert not operation_available("speech", dated_version("2024-10-21"))
    assert operation_available("speech", dated_version("2024-08-01-preview"))
    assert not operation_available("responses", dated_version("2025-01-01-preview"))
    assert operation_available("responses", dated_version("2025-03-01-preview"))
    assert not operation_available("image_edits", dated_version("2025-03-01-preview"))
    assert operation_available("image_edits", v1_version(None))
    assert operation_available("chat", dated_version("2023-05-15"))


def test_every_responses_and_batch_operation_needs_its_version() -> None:
    # DELETE /responses/{id} is the Responses API too, and creating a batch is the Batch
    # API (2024-07-01-preview; in 2024-10-21 GA): Azure answers 404 on older versions.
    for operation in ("responses", "response", "response_delete"):
        assert not operation_available(operation, dated_version("2024-10-21"))
        assert operation_available(operation, dated_version("2025-03-01-preview"))
    for operation in ("batches", "batch_create", "batch", "batch_cancel"):
        assert not operation_available(operation, dated_version("2024-06-01"))
        assert operation_available(operation, dated_version("2024-10-21"))
