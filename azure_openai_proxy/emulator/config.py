"""The emulator's settings: deployments, keys and timings, parsed once into frozen values.

`load_emulator_config(path)` reads a YAML file (or, with no path, the packaged
`default.yaml`) and raises `ValueError` naming the offending key when it is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

DEFAULT_API_KEY = "emulator-key"
DEFAULT_TPM = 1_000_000
KINDS = ("chat", "completions", "embeddings", "transcription", "speech", "images", "realtime")
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
_MiB = 1024 * 1024
_TOP_KEYS = frozenset(
    {
        "api_keys", "api_key", "region", "entra_tokens", "ttft_ms", "token_ms",
        "max_body_bytes", "completion_tokens", "burst_tokens", "deployments",
        "rate_window_seconds",
    }
)
_DEPLOYMENT_KEYS = frozenset(
    {"name", "model", "kind", "tpm", "rpm", "async_filter", "ttft_ms", "token_ms",
     "precise_timing", "context_tokens"}
)
# Context windows (prompt + completion tokens) of the models Azure deploys, most specific
# name first; a model not listed has no limit unless its deployment sets `context_tokens`.
# gpt-35-turbo 0301/0613 have 4,096 (azure-search-openai-demo#1199), its 16k model 16,384;
# gpt-4's turbo previews (1106, 0125, vision) 128,000 as gpt-4-turbo, not gpt-4's 8,192;
# gpt-5-chat 128,000, not the reasoning gpt-5's 400,000 (Azure's model table, as
# anomalyco/models.dev#164 took it).
CONTEXT_WINDOWS = (
    ("gpt-35-turbo-instruct", 4_097), ("gpt-35-turbo-16k", 16_384),
    ("gpt-35-turbo-0301", 4_096), ("gpt-35-turbo-0613", 4_096), ("gpt-35-turbo", 16_385),
    ("gpt-4o", 128_000), ("gpt-4.1", 1_047_576), ("gpt-4-32k", 32_768),
    ("gpt-4-turbo", 128_000), ("gpt-4-1106", 128_000), ("gpt-4-0125", 128_000),
    ("gpt-4-vision", 128_000), ("gpt-4", 8_192), ("o1-mini", 128_000), ("o1", 200_000),
    ("o3", 200_000), ("o4-mini", 200_000), ("gpt-5-chat", 128_000),
    ("gpt-5.1-chat", 128_000), ("gpt-5.2-chat", 128_000), ("gpt-5.4", 1_050_000),
    ("gpt-5.5", 1_050_000), ("gpt-5", 400_000),
)
# The most prompt tokens a gpt-5 reasoning model takes, below its window: "Input tokens
# exceed the configured limit of 272000 tokens." (cline#5474; Azure enforces it too:
# BerriAI/litellm#13496, #18928); gpt-5.4 and 5.5 take 922,000 of their 1,050,000
# (earendil-works/pi#5559, from Azure's model table); the chat models their whole window.
INPUT_LIMITS: tuple[tuple[str, int | None], ...] = (
    ("gpt-5-chat", None), ("gpt-5.1-chat", None), ("gpt-5.2-chat", None),
    ("gpt-5.4", 922_000), ("gpt-5.5", 922_000), ("gpt-5", 272_000),
)
# The most completion tokens a request may ask for (`max_tokens`), where Azure's model
# documentation gives a limit below the context window; most specific name first, None
# for a model whose whole window may be asked for. gpt-35-turbo-16k takes more than 4,096
# (ChatGPTNextWeb/NextChat#3195: 8192 works there, refused on 1106); gpt-4o's first
# version, 2024-05-13, writes 4,096 (optillm#4: "at most 4096" for gpt-4o in Sept 2024;
# zyocum/pdf2md#5: 16,384 since 2024-08-06); gpt-4's turbo previews 4,096 (NextChat#3195).
MAX_OUTPUT_TOKENS: tuple[tuple[str, int | None], ...] = (
    ("gpt-35-turbo-16k", None), ("gpt-35-turbo", 4_096), ("gpt-4o-2024-05-13", 4_096),
    ("gpt-4o", 16_384), ("gpt-4.1", 32_768), ("gpt-4-turbo", 4_096), ("gpt-4-1106", 4_096),
    ("gpt-4-0125", 4_096), ("gpt-4-vision", 4_096), ("gpt-5-chat", 16_384),
)


def input_limit(model: str) -> int | None:
    """The most prompt tokens Azure accepts for `model` (None: up to its window)."""
    return next((n for prefix, n in INPUT_LIMITS if model.startswith(prefix)), None)


def max_output_tokens(model: str) -> int | None:
    """The most `max_tokens` Azure accepts for `model` (None: no limit below its window)."""
    return next((n for prefix, n in MAX_OUTPUT_TOKENS if model.startswith(prefix)), None)


def is_reasoning_model(model: str) -> bool:
    """o1, o3, o4 and gpt-5 models: the ones Azure gives reasoning-model rules. Not
    gpt-5-chat, which takes `max_tokens` (stanfordnlp/dspy#8724: refused only as "too
    large"; Zackriya-Solutions/meetily#364: it works where gpt-5.1-chat's is refused) and
    `temperature` (langgenius/dify-official-plugins#2024)."""
    return model.startswith(_REASONING_PREFIXES) and not model.startswith("gpt-5-chat")


def model_family(model: str) -> str:
    """The model's name without its version, as Azure's messages give it:
    `o3-mini-2025-01-31` -> `o3-mini`, `gpt-35-turbo-0125` -> `gpt-35-turbo`,
    `dall-e-3-3.0` -> `dall-e-3`; `text-embedding-ada-002` is a name and stays, as do
    `gpt-4.1` and `gpt-5.1` (a dotted version follows a name with a dash in it)."""
    undotted = re.sub(r"^(.+-[^-]+)-\d+\.\d+$", r"\1", model)
    return re.sub(r"-(\d{4}-\d{2}-\d{2}|\d{4})$", "", undotted)


@dataclass(frozen=True)
class EmulatedDeployment:
    """One Azure deployment: its name in URLs, the model version it reports, what it does.

    `rpm` defaults to 6 per 1,000 `tpm` (at least 1); `tpm=None` means unlimited.
    """

    name: str
    model: str
    kind: str
    tpm: int | None = DEFAULT_TPM
    rpm: int | None = None
    async_filter: bool = False
    ttft_ms: float | None = None
    token_ms: float | None = None
    # Delays kept to ~0.1 ms of the schedule (a short spin after a coarse sleep) instead
    # of the event loop's 1 ms timer grid: for measuring what a proxy adds to a stream.
    precise_timing: bool = False
    # The model's context window in tokens (None: the model's own, from CONTEXT_WINDOWS).
    context_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"deployments[{self.name}].kind: {self.kind!r} is not one of {KINDS}")
        if self.rpm is None and self.tpm is not None:
            object.__setattr__(self, "rpm", max(1, self.tpm * 6 // 1000))
        if self.context_tokens is None:
            window = next((n for prefix, n in CONTEXT_WINDOWS if self.model.startswith(prefix)),
                          None)
            object.__setattr__(self, "context_tokens", window)

    @property
    def reasoning(self) -> bool:
        return is_reasoning_model(self.model)


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator app needs; `create_emulator_app(config)` takes nothing else."""

    api_keys: tuple[str, ...]
    deployments: tuple[EmulatedDeployment, ...]
    # x-ms-region's value: Azure sends the region's display name ("East US", "West Europe").
    region: str = "East US"
    entra_tokens: tuple[str, ...] = ()
    ttft_ms: float = 0
    token_ms: float = 0
    max_body_bytes: int = 25 * _MiB
    completion_tokens: int = 16
    burst_tokens: int = 4
    # Azure's TPM window is one minute (RPM: a sixth of it); tests may shrink it.
    rate_window_seconds: float = 60.0
    _by_name: Mapping[str, EmulatedDeployment] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {d.name: d for d in self.deployments})

    def deployment(self, name: str) -> EmulatedDeployment | None:
        return self._by_name.get(name)

    def ttft_for(self, dep: EmulatedDeployment | None) -> float:
        """Seconds before the first token for `dep` (its own setting wins)."""
        ms = dep.ttft_ms if dep is not None and dep.ttft_ms is not None else self.ttft_ms
        return ms / 1000

    def token_delay_for(self, dep: EmulatedDeployment | None) -> float:
        """Seconds per generated token for `dep` (its own setting wins)."""
        ms = dep.token_ms if dep is not None and dep.token_ms is not None else self.token_ms
        return ms / 1000


def load_emulator_config(path: str | None, *, api_key: str | None = None) -> EmulatorConfig:
    """Parse the YAML file at `path` (None: the packaged default set).

    `api_key`, when given, becomes KEY1 and the file's keys follow it; with no key
    anywhere the emulator accepts `DEFAULT_API_KEY`.
    """
    if path is None:
        text = resources.files(__package__).joinpath("default.yaml").read_text("utf-8")
    else:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path or 'default.yaml'}: not valid YAML: {exc}") from exc
    return config_from_mapping({} if raw is None else raw, api_key=api_key)


def config_from_mapping(raw: object, *, api_key: str | None = None) -> EmulatorConfig:
    """Validate an already-parsed YAML document into an `EmulatorConfig`."""
    if not isinstance(raw, Mapping):
        raise ValueError("emulator config: the top level must be a mapping")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"emulator config: unknown key {unknown[0]!r}")
    keys = _keys(raw)
    if api_key:
        keys = (api_key, *(k for k in keys if k != api_key))
    deployments = raw.get("deployments")
    if not isinstance(deployments, list) or not deployments:
        raise ValueError("deployments: must be a non-empty list")
    parsed = tuple(_deployment(i, d) for i, d in enumerate(deployments))
    names = [d.name for d in parsed]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"deployments: name {name!r} appears twice")
    config = EmulatorConfig(
        api_keys=keys or (DEFAULT_API_KEY,),
        deployments=parsed,
        region=_string(raw, "region", "East US"),
        entra_tokens=_string_list(raw, "entra_tokens"),
    )
    return replace(
        config,
        ttft_ms=_number(raw, "ttft_ms", 0.0),
        token_ms=_number(raw, "token_ms", 0.0),
        max_body_bytes=int(_number(raw, "max_body_bytes", config.max_body_bytes, minimum=1)),
        completion_tokens=int(_number(raw, "completion_tokens", 16, minimum=1)),
        burst_tokens=int(_number(raw, "burst_tokens", 4, minimum=1)),
        rate_window_seconds=float(_number(raw, "rate_window_seconds", 60.0, minimum=0.001)),
    )


def _keys(raw: Mapping[str, Any]) -> tuple[str, ...]:
    if "api_keys" in raw and "api_key" in raw:
        raise ValueError("api_key: give either api_key or api_keys, not both")
    if "api_key" in raw:
        return (_string(raw, "api_key", ""),) if raw["api_key"] else ()
    return _string_list(raw, "api_keys")


def _deployment(index: int, raw: object) -> EmulatedDeployment:
    where = f"deployments[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be a mapping with name, model and kind")
    unknown = sorted(set(raw) - _DEPLOYMENT_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("name", "model", "kind"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}.{key}: required, a non-empty string")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where}.kind: {raw['kind']!r} is not one of {', '.join(KINDS)}")
    tpm = _optional_int(raw, "tpm", where, DEFAULT_TPM)
    async_filter = raw.get("async_filter", False)
    if not isinstance(async_filter, bool):
        raise ValueError(f"{where}.async_filter: must be true or false")
    precise_timing = raw.get("precise_timing", False)
    if not isinstance(precise_timing, bool):
        raise ValueError(f"{where}.precise_timing: must be true or false")
    return EmulatedDeployment(
        name=raw["name"],
        model=raw["model"],
        kind=raw["kind"],
        tpm=tpm,
        rpm=_optional_int(raw, "rpm", where, None),
        async_filter=async_filter,
        ttft_ms=_number(raw, "ttft_ms", None, where=where),
        token_ms=_number(raw, "token_ms", None, where=where),
        precise_timing=precise_timing,
        context_tokens=_optional_int(raw, "context_tokens", where, None),
    )


def _optional_int(raw: Mapping[str, Any], key: str, where: str, default: int | None) -> int | None:
    if key not in raw:
        return default
    value = raw[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}.{key}: must be a whole number >= 0 or null")
    return value


def _string(raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key}: must be a string")
    return value


def _string_list(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key}: must be a list of non-empty strings")
    return tuple(value)


def _number(
    raw: Mapping[str, Any], key: str, default: Any, *, minimum: float = 0, where: str = ""
) -> Any:
    if key not in raw:
        return default
    value = raw[key]
    name = f"{where}.{key}" if where else key
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{name}: must be a number >= {minimum:g}")
    return float(value) if isinstance(value, float) else value
