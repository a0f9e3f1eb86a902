from __future__ import annotations

from pathlib import Path

import pytest

from azure_openai_proxy.emulator import DEFAULT_API_KEY, EmulatedDeployment, load_emulator_config
from azure_openai_proxy.emulator.config import (
    config_from_mapping,
    input_limit,
    is_reasoning_model,
    max_output_tokens,
    model_family,
)


def test_default_set_covers_every_kind_and_required_names() -> None:
    config = load_emulator_config(None)
    assert config.api_keys == (DEFAULT_API_KEY,)
    kinds = {d.kind for d in config.deployments}
    assert kinds == {"chat", "completions", "embeddings", "transcription", "speech", "images",
                     "realtime"}
    expected = {
        "gpt-35-turbo": "gpt-35-turbo-0125", "gpt-4o": "gpt-4o-2024-08-06",
        "gpt-4o-mini": "gpt-4o-mini-2024-07-18", "o3-mini": "o3-mini-2025-01-31",
    }
    for name, model in expected.items():
        deployment = config.deployment(name)
        assert deployment is not None and deployment.model == model
    for name in ("gpt-35-turbo-instruct", "text-embedding-3-small", "whisper", "tts", "dall-e-3",
                 "gpt-4o-realtime-preview", "gpt-realtime"):
        assert config.deployment(name) is not None
    assert all(d.tpm is not None and d.tpm >= 1_000_000 for d in config.deployments)


def test_cli_key_is_key1_and_file_keys_follow(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(
        "api_keys: [a, b]\nregion: swedencentral\nttft_ms: 5\n"
        "deployments:\n  - {name: d, model: gpt-4o-2024-08-06, kind: chat, tpm: 1000}\n"
    )
    config = load_emulator_config(str(path), api_key="cli")
    assert config.api_keys == ("cli", "a", "b")
    assert config.region == "swedencentral" and config.ttft_ms == 5
    deployment = config.deployments[0]
    assert deployment.rpm == 6  # 6 RPM per 1,000 TPM


def test_single_api_key_and_async_filter() -> None:
    config = config_from_mapping(
        {"api_key": "k", "deployments": [
            {"name": "d", "model": "m", "kind": "chat", "async_filter": True, "tpm": None}
        ]}
    )
    assert config.api_keys == ("k",)
    assert config.deployments[0].async_filter is True
    assert config.deployments[0].tpm is None and config.deployments[0].rpm is None


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"deployments": []}, "deployments"),
        ({"bogus": 1, "deployments": [{"name": "d", "model": "m", "kind": "chat"}]}, "bogus"),
        ({"deployments": [{"name": "d", "model": "m", "kind": "video"}]}, "kind"),
        ({"deployments": [{"model": "m", "kind": "chat"}]}, "name"),
        ({"deployments": [{"name": "d", "model": "m", "kind": "chat", "tpm": -1}]}, "tpm"),
        ({"deployments": [{"name": "d", "model": "m", "kind": "chat", "rpm": "x"}]}, "rpm"),
        ({"deployments": [{"name": "d", "model": "m", "kind": "chat", "colour": 1}]}, "colour"),
        ({"ttft_ms": "slow", "deployments": [{"name": "d", "model": "m", "kind": "chat"}]},
         "ttft_ms"),
        ({"api_key": "a", "api_keys": ["b"],
          "deployments": [{"name": "d", "model": "m", "kind": "chat"}]}, "api_key"),
        ({"deployments": [{"name": "d", "model": "m", "kind": "chat"},
                          {"name": "d", "model": "m", "kind": "chat"}]}, "twice"),
        ([1, 2], "mapping"),
    ],
)
def test_invalid_config_names_the_key(raw: object, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        config_from_mapping(raw)


def test_bad_yaml_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("deployments: [\n")
    with pytest.raises(ValueError, match="YAML"):
        load_emulator_config(str(path))


def test_reasoning_models_by_prefix() -> None:
    assert [is_reasoning_model(m) for m in ("o1", "o3-mini-2025-01-31", "o4-mini", "gpt-5-nano",
                                            "gpt-4o", "gpt-35-turbo")] == [
        True, True, True, True, False, False,
    ]
    assert EmulatedDeployment("x", "o1-2024-12-17", "chat").reasoning
    # gpt-5-chat takes max_tokens and temperature (dspy#8724, meetily#364); 5.1-chat does not
    assert not is_reasoning_model("gpt-5-chat-2025-08-07")
    assert is_reasoning_model("gpt-5.1-chat-2025-11-13")


def test_deployment_overrides_latency() -> None:
    config = config_from_mapping(
        {"ttft_ms": 100, "token_ms": 10, "deployments": [
            {"name": "a", "model": "m", "kind": "chat", "ttft_ms": 5},
            {"name": "b", "model": "m", "kind": "chat"},
        ]}
    )
    a, b = config.deployment("a"), config.deployment("b")
    assert config.ttft_for(a) == 0.005 and config.token_delay_for(a) == 0.01
    assert config.ttft_for(b) == 0.1


def test_documented_example_config_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "emulator.md").read_text()
    example = doc.split("## Configuration file", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    config = load_emulator_config(str(path))
    assert config.api_keys == ("key-one", "key-two") and config.region == "Sweden Central"
    assert config.deployment("chat-async").async_filter  # type: ignore[union-attr]
    assert config.deployment("embed").tpm is None  # type: ignore[union-attr]
    assert config.deployment("o3-mini").rpm == 20  # type: ignore[union-attr]


def test_precise_timing_is_a_per_deployment_flag() -> None:
    config = config_from_mapping({"deployments": [
        {"name": "a", "model": "m", "kind": "chat", "precise_timing": True},
        {"name": "b", "model": "m", "kind": "chat"},
    ]})
    assert config.deployment("a").precise_timing  # type: ignore[union-attr]
    assert not config.deployment("b").precise_timing  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="precise_timing"):
        config_from_mapping({"deployments": [
            {"name": "a", "model": "m", "kind": "chat", "precise_timing": "yes"},
        ]})


async def test_precise_sleep_never_wakes_early() -> None:
    import time

    from azure_openai_proxy.emulator.exchange import precise_sleep

    for seconds in (0.0005, 0.003, 0.012):
        started = time.perf_counter()
        await precise_sleep(seconds)
        assert time.perf_counter() - started >= seconds


def test_context_window_is_the_models_own_unless_set() -> None:
    config = config_from_mapping({"deployments": [
        {"name": "a", "model": "gpt-4o-2024-08-06", "kind": "chat"},
        {"name": "b", "model": "gpt-35-turbo-instruct-0914", "kind": "completions"},
        {"name": "c", "model": "gpt-35-turbo-0125", "kind": "chat", "context_tokens": 50},
        {"name": "d", "model": "my-own-model", "kind": "chat"},
    ]})
    windows = [config.deployment(n).context_tokens for n in "abcd"]  # type: ignore[union-attr]
    assert windows == [128_000, 4_097, 50, None]
    with pytest.raises(ValueError, match="context_tokens"):
        config_from_mapping({"deployments": [
            {"name": "a", "model": "m", "kind": "chat", "context_tokens": "big"},
        ]})


@pytest.mark.parametrize(("model", "window", "most"), [
    # gpt-35-turbo-16k may ask for its whole window (NextChat#3195: max_tokens 8192 works)
    ("gpt-35-turbo-16k-0613", 16_384, None),
    ("gpt-35-turbo-0613", 4_096, 4_096),
    ("gpt-35-turbo-0125", 16_385, 4_096),
    # gpt-4's turbo previews are gpt-4-turbo, not gpt-4's 8,192 window
    ("gpt-4-1106-preview", 128_000, 4_096),
    ("gpt-4-0125-preview", 128_000, 4_096),
    ("gpt-4-0613", 8_192, None),
    # gpt-4o's first version writes 4,096 (optillm#4), later ones 16,384
    ("gpt-4o-2024-05-13", 128_000, 4_096),
    ("gpt-4o-2024-08-06", 128_000, 16_384),
    # gpt-5-chat's window is 128,000, not the reasoning gpt-5's 400,000
    ("gpt-5-chat-2025-08-07", 128_000, 16_384),
    ("gpt-5-mini-2025-08-07", 400_000, None),
])
def test_context_window_and_output_limit_by_model(model: str, window: int, most: int | None) -> None:
    assert EmulatedDeployment("d", model, "chat").context_tokens == window
    assert max_output_tokens(model) == most


@pytest.mark.parametrize(("model", "family"), [
    ("gpt-4.1", "gpt-4.1"),  # was "gpt": its .1 was read as a version
    ("gpt-5.1", "gpt-5.1"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("dall-e-3-3.0", "dall-e-3"),
    ("gpt-35-turbo-0125", "gpt-35-turbo"),
    ("o3-mini-2025-01-31", "o3-mini"),
    ("text-embedding-ada-002", "text-embedding-ada-002"),
])
def test_model_family_strips_only_a_version(model: str, family: str) -> None:
    """The name OperationNotSupported gives: "...does not work with the specified model,
    gpt-4.1" for a deployment of `gpt-4.1`, not "model, gpt"."""
    assert model_family(model) == family


@pytest.mark.parametrize(("model", "window", "most_input"), [
    ("gpt-5-2025-08-07", 400_000, 272_000),
    ("gpt-5.1-2025-11-13", 400_000, 272_000),
    ("gpt-5.1-chat-2025-11-13", 128_000, None),  # chat models: their whole window
    ("gpt-5.4", 1_050_000, 922_000),  # earendil-works/pi#5559
    ("gpt-4o-2024-08-06", 128_000, None),
])
def test_gpt5_input_limits_inside_the_window(model: str, window: int, most_input: int | None) -> None:
    assert EmulatedDeployment("d", model, "chat").context_tokens == window
    assert input_limit(model) == most_input
