"""The api-version table: which model families need which version, the choice for a
deployment that configures none, and the warnings for retired versions."""

from __future__ import annotations

import pytest

from azure_openai_proxy.apiversions import (
    DEFAULT_API_VERSION,
    GA_VERSIONS,
    NEWEST_PREVIEW,
    PREVIEW_VERSIONS,
    choose_api_version,
    deployment_need,
    model_need,
    parse_api_version,
    support_warning,
)
from azure_openai_proxy.compat import infer_family


@pytest.mark.parametrize(
    ("name", "family", "first"),
    [
        ("o1-preview", "o1-preview", "2024-09-01"),
        ("o1-mini", "o1-mini", "2024-09-01"),
        ("o1", "o1", "2024-12-01"),
        ("o3-mini", "o3-mini", "2024-12-01"),
        ("my-o3-mini", "o3-mini", "2024-12-01"),
        ("o3-mini-2025-01-31", "o3-mini", "2024-12-01"),
        ("o3", "o3", "2025-04-01"),
        ("o3-pro", "o3", "2025-04-01"),
        ("o4-mini", "o4-mini", "2025-04-01"),
        ("codex-mini", "codex-mini", "2025-04-01"),
        ("gpt-5", "gpt-5", "2025-04-01"),
        ("GPT-5-mini", "gpt-5", "2025-04-01"),
        ("gpt5-chat", "gpt-5-chat", "2025-04-01"),
        ("gpt-5-chat-2025-08-07", "gpt-5-chat", "2025-04-01"),
        ("gpt-5.1-chat", "gpt-5", "2025-04-01"),
        ("gpt-4o-realtime-preview", "realtime", "2024-10-01"),
        ("gpt-4o-mini-realtime-preview", "realtime", "2024-10-01"),
        ("gpt-realtime", "realtime", "2024-10-01"),
        ("gpt-4o-audio-preview", "audio", "2025-01-01"),
        ("gpt-4o-mini-tts", "tts", "2024-02-15"),
        ("tts-hd", "tts", "2024-02-15"),
    ],
)
def test_model_families_and_their_first_version(name: str, family: str, first: str) -> None:
    need = model_need(name)
    assert need is not None and need.family == family and need.since.preview == first


@pytest.mark.parametrize(
    "name", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-41-mini", "gpt-35-turbo", "o365-bot",
             "text-embedding-3-small", "whisper", "dall-e-3", "photo1"]
)
def test_models_the_default_serves_need_nothing(name: str) -> None:
    assert model_need(name) is None
    assert choose_api_version(model_need(name)) == choose_api_version(None)


def test_the_deployment_name_counts_as_much_as_the_model_name() -> None:
    need = deployment_need("thinker", "o3-mini")
    assert need is not None and need.family == "o3-mini"
    need = deployment_need("o4-mini", "reasoner")
    assert need is not None and need.family == "o4-mini"


def test_model_family_setting_overrides_the_name() -> None:
    assert deployment_need("o3-bot", "o3-bot", "standard") is None
    need = deployment_need("thinker", "thinker", "reasoning")
    assert need is not None and need.since.preview == "2024-12-01"
    # A name the table knows keeps its own, stricter rule.
    need = deployment_need("o4-mini", "o4-mini", "reasoning")
    assert need is not None and need.since.preview == "2025-04-01"


def test_choice_keeps_the_default_when_it_serves_the_model() -> None:
    assert choose_api_version(None).version == DEFAULT_API_VERSION == "2024-10-21"
    assert choose_api_version(None).reason == "default"
    # o1-mini shipped on 2024-09-01-preview, so the later GA 2024-10-21 serves it.
    assert choose_api_version(model_need("o1-mini")).reason == "default"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("o3-mini", "chosen for o3-mini: reasoning models need >= 2024-12-01-preview"),
        ("o4-mini", "chosen for o4-mini: reasoning models need >= 2025-04-01-preview"),
        ("gpt-5-mini", "chosen for gpt-5: reasoning models need >= 2025-04-01-preview"),
        ("gpt-4o-realtime-preview",
         "chosen for realtime: realtime models need >= 2024-10-01-preview (previews only)"),
        ("gpt-4o-mini-tts",
         "chosen for tts: speech models need >= 2024-02-15-preview (previews only)"),
    ],
)
def test_choice_for_a_model_the_default_cannot_serve(name: str, reason: str) -> None:
    choice = choose_api_version(model_need(name))
    assert choice.version == NEWEST_PREVIEW == "2025-04-01-preview"
    assert choice.reason == reason
    need = model_need(name)
    assert need is not None and need.accepted_by(parse_api_version(choice.version))


def test_every_need_is_served_by_the_newest_preview() -> None:
    # The choice is only sound if the newest known preview serves every family.
    for name in ("o1", "o3", "o4-mini", "codex-mini", "gpt-5", "gpt-realtime", "gpt-audio", "tts"):
        need = model_need(name)
        assert need is not None and need.accepted_by(parse_api_version(NEWEST_PREVIEW))


def test_preview_only_needs_refuse_a_ga_version_of_any_date() -> None:
    need = model_need("tts")
    assert need is not None
    assert not need.accepted_by(parse_api_version("2024-10-21"))
    assert need.accepted_by(parse_api_version("2024-05-01-preview"))
    assert need.accepted_by(parse_api_version("v1"))


def test_the_table_is_ordered_and_parses() -> None:
    for versions in (GA_VERSIONS, PREVIEW_VERSIONS):
        parsed = [parse_api_version(v) for v in versions]
        assert parsed == sorted(parsed)


@pytest.mark.parametrize(
    ("version", "warning"),
    [
        ("2023-12-01-preview",
         "api-version 2023-12-01-preview was retired by Azure on 2024-07-01: "
         "move to 2025-04-01-preview"),
        ("2023-03-15-preview",
         "api-version 2023-03-15-preview was retired by Azure on 2024-07-01: "
         "move to 2025-04-01-preview"),
        ("2024-12-01-preview",
         "api-version 2024-12-01-preview is past Azure's preview support (only the latest "
         "three previews stay supported): move to 2025-04-01-preview"),
        ("2025-09-01-preview",
         "api-version 2025-09-01-preview is not one the gateway knows: Azure may answer 404"),
        ("2024-10-21", None),
        ("2024-02-01", None),
        ("2025-02-01-preview", None),
        ("2025-04-01-preview", None),
        ("2023-06-01-preview", None),  # kept by Azure by name (DALL-E 2)
        ("v1", None),
        ("preview", None),
    ],
)
def test_support_warnings(version: str, warning: str | None) -> None:
    assert support_warning(version, "2026-12-03") == warning


# ---- one table decides "reasoning" (review: compat and this table used to disagree) ----

@pytest.mark.parametrize("name", ["o4", "my-o4", "O4-pro", "team/o4mini"])
def test_a_reasoning_name_the_table_does_not_list_gets_the_general_rule(name: str) -> None:
    need = deployment_need(name, name)
    assert need is not None and need.kind == "reasoning models"
    assert need.since.preview == "2024-12-01"
    choice = choose_api_version(need)
    assert choice.version == NEWEST_PREVIEW
    assert choice.reason == "chosen for a reasoning model: reasoning models need >= 2024-12-01-preview"


@pytest.mark.parametrize(
    "name", ["o1", "o3-mini", "o4", "my-o4", "o4-mini", "codex-mini", "my-codex-mini", "gpt-5",
             "gpt-4o", "o365-bot", "gpt-4o-realtime-preview", "tts-hd", "photo1"]
)
def test_family_and_version_come_from_the_same_table(name: str) -> None:
    need = deployment_need(name, name)
    reasoning = need is not None and need.kind == "reasoning models"
    assert (infer_family(name) == "reasoning") == reasoning
