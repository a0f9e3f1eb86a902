"""api-versions per operation: what each operation needs (the version table), the
version a request is sent on (the newest of what its model and its operation need,
never below the deployment's own), and the refusal of an explicit version too old."""

from __future__ import annotations

import pytest

from azure_openai_proxy.apiversions import (
    DEFAULT_API_VERSION,
    GA_VERSIONS,
    MODEL_NEEDS,
    NEWEST_PREVIEW,
    OPERATION_NEEDS,
    model_operations,
    operation_need,
    operation_version,
    parse_api_version,
)
from azure_openai_proxy.errors import InvalidRequest
from azure_openai_proxy.routing import Target
from azure_openai_proxy.settings import DeploymentSettings
from azure_openai_proxy.translate import api_version_for


@pytest.mark.parametrize(
    ("operation", "first"),
    [
        ("responses", "2025-03-01"),
        ("responses/resp_1", "2025-03-01"),
        ("responses/resp_1/input_items", "2025-03-01"),
        ("vector_stores", "2024-05-01"),
        ("vector_stores/vs_1/files", "2024-05-01"),
        ("assistants", "2024-05-01"),
        ("threads/t_1/runs", "2024-05-01"),
        ("batches", "2024-07-01"),
        ("batches/b_1/cancel", "2024-07-01"),
        ("audio/speech", "2024-02-15"),
        ("images/edits", "2025-04-01"),
        ("realtime", "2024-10-01"),
    ],
)
def test_the_table_names_the_first_version_of_each_operation(operation: str, first: str) -> None:
    need = operation_need(operation)
    assert need is not None and need.since.preview == first


@pytest.mark.parametrize(
    "operation",
    ["chat/completions", "completions", "embeddings", "images/generations",
     "audio/transcriptions", "files", "files/f_1/content", "fine_tuning/jobs"],
)
def test_operations_every_version_serves_need_nothing(operation: str) -> None:
    assert operation_need(operation) is None


@pytest.mark.parametrize(
    ("operation", "version", "served"),
    [
        ("responses", "2024-10-21", False),  # the default GA: Azure's 404
        ("responses", "2025-01-01-preview", False),
        ("responses", "2025-03-01-preview", True),
        ("vector_stores", "2024-10-21", False),
        ("vector_stores", "2024-05-01-preview", True),
        ("batches", "2024-06-01", False),
        ("batches", "2024-10-21", True),
        ("batches", "2024-07-01-preview", True),
        ("audio/speech", "2024-10-21", False),
        ("images/edits", "2025-03-01-preview", False),
        ("responses", "v1", True),
        ("responses", "preview", True),
    ],
)
def test_which_versions_serve_an_operation(operation: str, version: str, served: bool) -> None:
    need = operation_need(operation)
    assert need is not None and need.accepted_by(parse_api_version(version)) is served


def test_the_newest_preview_serves_every_operation_and_every_model() -> None:
    # operation_version relies on it: one version that serves both needs.
    newest = parse_api_version(NEWEST_PREVIEW)
    assert all(need.accepted_by(newest) for need in OPERATION_NEEDS.values())
    assert all(need.accepted_by(newest) for _, need in MODEL_NEEDS)


def test_a_chosen_version_that_serves_the_operation_is_kept() -> None:
    batches = OPERATION_NEEDS["batches"]
    assert operation_version(DEFAULT_API_VERSION, False, batches) == DEFAULT_API_VERSION


def test_a_chosen_version_too_old_for_the_operation_becomes_the_newest_preview() -> None:
    responses = OPERATION_NEEDS["responses"]
    assert operation_version(DEFAULT_API_VERSION, False, responses) == NEWEST_PREVIEW
    # A reasoning deployment's chosen preview already serves it: unchanged.
    assert operation_version(NEWEST_PREVIEW, False, responses) == NEWEST_PREVIEW


def test_an_explicit_version_is_never_changed() -> None:
    responses = OPERATION_NEEDS["responses"]
    assert operation_version("2024-10-21", True, responses) is None
    assert operation_version("2025-03-01-preview", True, responses) == "2025-03-01-preview"
    for ga in GA_VERSIONS:
        assert operation_version(ga, True, OPERATION_NEEDS["vector_stores"]) is None


def _deployment(**extra: object) -> DeploymentSettings:
    return DeploymentSettings.model_validate(
        {"model_name": "gpt-4o", "deployment_name": "gpt-4o",
         "endpoint": "https://east.example/", "api_key": "k", **extra})


RESPONSES = Target("resource", "responses")
CHAT = Target("deployment", "chat/completions")


def test_a_deployment_without_a_version_sends_responses_on_one_that_serves_it() -> None:
    deployment = _deployment()
    assert deployment.api_version == DEFAULT_API_VERSION  # chosen for gpt-4o
    assert api_version_for(deployment, RESPONSES, None, True) == NEWEST_PREVIEW
    assert api_version_for(deployment, Target("resource", "vector_stores"), None,
                           True) == NEWEST_PREVIEW
    assert api_version_for(deployment, CHAT, None, True) == DEFAULT_API_VERSION
    assert api_version_for(deployment, Target("resource", "files"), None,
                           True) == DEFAULT_API_VERSION


def test_an_explicit_version_too_old_for_the_operation_is_a_clear_400() -> None:
    deployment = _deployment(api_version="2024-10-21")
    with pytest.raises(InvalidRequest) as refused:
        api_version_for(deployment, RESPONSES, None, True)
    error = refused.value
    assert error.http_status == 400 and error.code == "unsupported_api_version"
    assert "The Responses API needs api-version 2025-03-01-preview or later" in error.message
    assert "configured with api-version 2024-10-21" in error.message
    assert api_version_for(deployment, CHAT, None, True) == "2024-10-21"


def test_a_native_clients_own_version_and_the_v1_api_are_left_alone() -> None:
    native = Target("resource", "responses", native=True)
    assert api_version_for(_deployment(), native, "2024-10-21", True) == "2024-10-21"
    assert api_version_for(_deployment(api="v1"), RESPONSES, None, True) is None


def test_the_batch_apis_refusal_names_the_ga_version_that_serves_it() -> None:
    """An env-mode user on GA 2024-06-01 wants GA 2024-10-21, not only a preview."""
    need = OPERATION_NEEDS["batches"]
    assert need.describe() == "2024-07-01-preview or later (GA 2024-10-21 or later)"
    assert need.accepted_by(parse_api_version("2024-10-21"))
    assert not need.accepted_by(parse_api_version("2024-06-01"))
    assert "GA 2024-10-21" in need.refusal("2024-06-01")


@pytest.mark.parametrize(
    ("names", "operations"),
    [
        (("gpt-4o",), ("responses",)),
        (("prod-chat", "gpt-4.1-mini"), ("responses",)),
        (("o3-mini",), ("responses",)),
        (("gpt-5-nano",), ("responses",)),
        (("gpt-4o-mini-tts",), ("audio/speech",)),
        (("tts-hd",), ("audio/speech",)),
        (("gpt-4o-realtime-preview",), ("realtime",)),
        (("gpt-4o-transcribe",), ()),
        (("gpt-4o-audio-preview",), ()),
        (("gpt-image-1",), ("images/edits",)),
        (("gpt-35-turbo",), ()),
        (("text-embedding-3-large",), ()),
    ],
)
def test_what_a_model_offers_that_needs_its_own_version(
        names: tuple[str, ...], operations: tuple[str, ...]) -> None:
    assert model_operations(*names) == operations
    assert all(operation in OPERATION_NEEDS for operation in operations)
