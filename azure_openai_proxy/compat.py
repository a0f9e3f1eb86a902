"""Fit an OpenAI request to what one Azure deployment accepts (api-version, model family).

`adapt_chat_request` / `adapt_completions_request` take the client's parsed body and the
deployment's `DeploymentProfile` and return an `Adaptation`: the body to send (a new dict
when anything changed; the input is never mutated), and one note per change for the
`x-proxy-adapted` header and the debug log. Where the change would alter what the client
gets, they raise `UnsupportedParameter` (400) naming the api-version that is needed.

The tables below are the data (wire reference, section 3, plus the emulator's reading of
Azure's specs for parameters that section does not list). To support a new parameter,
add a line: its first version, and whether an older version drops or refuses it.
"Drop" means the answer keeps its meaning (a hint, metadata, a latency optimisation);
"refuse" means the client asked for something it would silently not get.
A parameter whose value means "unused" (`null`, `false`, `[]`, `{}`, `{"type":"text"}`,
`["text"]`) is dropped rather than refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from azure_openai_proxy.apiversions import (
    ApiVersion,
    ModelNeed,
    Since,
    is_reasoning,
    model_need,
    parse_api_version,
    reasoning_need,
)
from azure_openai_proxy.errors import UnsupportedParameter

__all__ = [
    "CHAT_PARAMETERS",
    "COMPLETIONS_PARAMETERS",
    "REASONING_DROPPED",
    "REASONING_SINCE",
    "Adaptation",
    "DeploymentProfile",
    "Gate",
    "ModelFamily",
    "adapt_chat_request",
    "adapt_completions_request",
    "infer_family",
]

ModelFamily = Literal["reasoning", "standard"]


@dataclass(frozen=True, slots=True)
class Gate:
    """A parameter's first api-version, and what an older version does with it."""

    since: Since
    older: Literal["drop", "refuse"]


def _gates(older: Literal["drop", "refuse"], since: Since, *names: str) -> dict[str, Gate]:
    return dict.fromkeys(names, Gate(since, older))


_V1_ONLY = Since("9999-12-31")
STREAM_OPTIONS_SINCE = Since("2024-09-01", ga="2024-10-21")
MAX_COMPLETION_TOKENS_SINCE = Since("2024-09-01")
JSON_SCHEMA_SINCE = Since("2024-08-01", ga="2024-10-21")
# Reasoning models answer 400 "enabled only for api versions 2024-12-01-preview and later";
# some need more (apiversions.MODEL_NEEDS: o4-mini, gpt-5... 2025-04-01-preview).
REASONING_SINCE = reasoning_need(None).since
# Sampling parameters Azure's reasoning models reject; dropping them is what OpenAI's
# own guidance for these models amounts to.
REASONING_DROPPED = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)

CHAT_PARAMETERS: dict[str, Gate] = {
    # Tools on a version without them would answer in prose: refuse. (Translating
    # tools->functions would also need every response and stream frame translated back.)
    **_gates("refuse", Since("2023-07-01", ga="2024-02-01"), "functions", "function_call"),
    **_gates("refuse", Since("2023-12-01", ga="2024-02-01"), "tools", "tool_choice"),
    **_gates("refuse", Since("2023-12-01"), "data_sources", "logprobs", "top_logprobs"),
    # `json_schema` has its own, later gate (JSON_SCHEMA_SINCE).
    "response_format": Gate(Since("2023-12-01"), "refuse"),
    "seed": Gate(Since("2023-12-01"), "drop"),  # best-effort determinism only
    # parallel_tool_calls: older versions already allow parallel calls. Handled apart:
    # max_completion_tokens (renamed to max_tokens), stream_options (usage injection).
    **_gates("drop", STREAM_OPTIONS_SINCE, "parallel_tool_calls", "stream_options"),
    # reasoning_effort only means something to reasoning models, which need
    # 2024-12-01-preview anyway (refused below that), so on older versions it is noise.
    **_gates("drop", Since("2024-12-01"), "store", "metadata", "reasoning_effort"),
    # A prediction only speeds generation up; the answer is the same without it.
    "prediction": Gate(Since("2025-01-01"), "drop"),
    **_gates("refuse", Since("2025-01-01"), "audio", "modalities"),
    "user_security_context": Gate(Since("2025-04-01"), "drop"),
    **_gates(
        "drop", _V1_ONLY, "service_tier", "prompt_cache_key", "safety_identifier", "verbosity"
    ),
    "web_search_options": Gate(_V1_ONLY, "refuse"),
}

COMPLETIONS_PARAMETERS: dict[str, Gate] = {
    "seed": Gate(Since("2023-12-01"), "drop"),
    "stream_options": Gate(STREAM_OPTIONS_SINCE, "drop"),
}

def infer_family(*names: str) -> ModelFamily:
    """`reasoning` if any name (model or deployment) names a reasoning model: o-series,
    gpt-5, codex-mini... as apiversions' table says, the same table that chooses the
    deployment's api-version."""
    return "reasoning" if is_reasoning(model_need(*names)) else "standard"


@dataclass(frozen=True, slots=True)
class DeploymentProfile:
    """What one deployment accepts: its API family, api-version and model family."""

    api: Literal["dated", "v1"]
    api_version: str | None  # None, "v1" or "preview" on the v1 API
    family: ModelFamily
    unsupported_params: frozenset[str] = frozenset()  # from config: always dropped
    need: ModelNeed | None = None  # apiversions.deployment_need: the version it needs
    # Foundry's model inference API on its own version (2024-05-01-preview), judged on the
    # dated table but for `response_format: json_schema`, which it takes (Microsoft's
    # structured-outputs how-to for Foundry Models sends it on that version).
    model_inference: bool = False
    # Decided once per profile (a profile is made once per deployment and api-version):
    # the body keys that make a standard model's request need the full walk
    # (`_chat_names_to_check`), and whether the version takes `stream_options`.
    names_to_check: frozenset[str] = field(init=False, compare=False, repr=False)
    takes_stream_options: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names_to_check", _chat_names_to_check(self))
        object.__setattr__(self, "takes_stream_options",
                           self.version.accepts(STREAM_OPTIONS_SINCE))

    @property
    def version(self) -> ApiVersion:
        if self.api == "v1":
            return parse_api_version(None)
        try:
            return parse_api_version(self.api_version)
        except ValueError:  # settings validate the shape; never block on a surprise
            return parse_api_version(None)


class Adaptation(NamedTuple):
    """The body to send upstream and what was changed to get it. (A NamedTuple: made on
    every chat request, and a frozen dataclass costs three times as much to build.)"""

    body: dict[str, Any]  # the input itself when nothing changed
    changed: bool
    notes: tuple[str, ...]  # "max_tokens->max_completion_tokens", "dropped:temperature"...
    client_wants_usage: bool  # stream with stream_options.include_usage from the client
    usage_injected: bool  # the gateway added include_usage: strip the usage frame


def adapt_chat_request(
    body: dict[str, Any], profile: DeploymentProfile, *, want_stream_usage: bool = True
) -> Adaptation:
    """Adapt a chat/completions body to `profile`; raise `UnsupportedParameter` if it can't."""
    if profile.family == "standard" and body.keys().isdisjoint(profile.names_to_check):
        # Most requests: nothing in the body concerns this deployment's version. The
        # answer the full walk below would give, without copying the body.
        if body.get("stream") is not True:
            return Adaptation(body, False, (), False, False)
        if not profile.unsupported_params:  # a stream: only its usage may be asked for
            return _stream_usage(body, profile, want_stream_usage)
    return _adapt_chat_fully(body, profile, want_stream_usage)


_USAGE_ADDED = ("added:stream_options.include_usage",)


def _stream_usage(
    body: dict[str, Any], profile: DeploymentProfile, want_stream_usage: bool
) -> Adaptation:
    """`_finish`'s answer for a standard model's stream whose body needs nothing else
    (no gated parameter the version lacks, none the operator drops)."""
    asked = body.get("stream_options")
    wants = isinstance(asked, dict) and asked.get("include_usage") is True
    if wants or not want_stream_usage or not profile.takes_stream_options:
        return Adaptation(body, False, (), wants, False)
    out = dict(body)
    out["stream_options"] = {**(asked if isinstance(asked, dict) else {}), "include_usage": True}
    return Adaptation(out, True, _USAGE_ADDED, False, True)


def _adapt_chat_fully(
    body: dict[str, Any], profile: DeploymentProfile, want_stream_usage: bool
) -> Adaptation:
    version = profile.version
    out = dict(body)
    notes: list[str] = []
    if profile.family == "reasoning":
        _adapt_reasoning(out, version, reasoning_need(profile.need), notes)
    _apply_gates(out, version, CHAT_PARAMETERS, notes)
    if not profile.model_inference:
        _check_json_schema(out, version)
    if "max_completion_tokens" in out and not version.accepts(MAX_COMPLETION_TOKENS_SINCE):
        _rename(out, "max_completion_tokens", "max_tokens", notes)
    return _finish(body, out, profile, version, notes, want_stream_usage)


def _chat_names_to_check(profile: DeploymentProfile) -> frozenset[str]:
    """The body keys that make `adapt_chat_request` do anything for a standard model's
    non-streamed request on `profile`: gated parameters the version lacks, the ones the
    operator drops, and those the version renames or checks further."""
    version = profile.version
    names = set(profile.unsupported_params)
    if not version.is_v1:
        names.update(name for name, gate in CHAT_PARAMETERS.items()
                     if not version.accepts(gate.since))
    if not (profile.model_inference or version.accepts(JSON_SCHEMA_SINCE)):
        names.add("response_format")
    if not version.accepts(MAX_COMPLETION_TOKENS_SINCE):
        names.add("max_completion_tokens")
    return frozenset(names)


def adapt_completions_request(
    body: dict[str, Any], profile: DeploymentProfile, *, want_stream_usage: bool = True
) -> Adaptation:
    """Adapt a legacy completions body: only the api-version gates and stream usage apply."""
    version = profile.version
    out = dict(body)
    notes: list[str] = []
    _apply_gates(out, version, COMPLETIONS_PARAMETERS, notes)
    return _finish(body, out, profile, version, notes, want_stream_usage)


def _adapt_reasoning(
    out: dict[str, Any], version: ApiVersion, need: ModelNeed, notes: list[str]
) -> None:
    if not need.accepted_by(version):
        raise UnsupportedParameter(
            f"This deployment serves {_reasoning_model(need)}, which Azure "
            f"enables only for api-version {need.since.describe()}; the deployment "
            f"is configured with api-version {version}.",
            param="model",
        )
    if "max_tokens" in out:
        _rename(out, "max_tokens", "max_completion_tokens", notes)
    for name in REASONING_DROPPED:
        if name in out:
            del out[name]
            notes.append(f"dropped:{name}")


def _reasoning_model(need: ModelNeed) -> str:
    """`a reasoning model (o3-mini)`; just `a reasoning model` for the general rule."""
    general = reasoning_need(None)
    return general.family if need == general else f"{general.family} ({need.family})"


def _rename(out: dict[str, Any], old: str, new: str, notes: list[str]) -> None:
    """Move `old` to `new`; when both are set, `new` wins and `old` is dropped."""
    value = out.pop(old)
    if out.get(new) is None and value is not None:
        out[new] = value
        notes.append(f"{old}->{new}")
    else:
        notes.append(f"dropped:{old}")


def _apply_gates(
    out: dict[str, Any], version: ApiVersion, table: dict[str, Gate], notes: list[str]
) -> None:
    if version.is_v1:
        return
    for name in [name for name in out if name in table]:
        gate = table[name]
        if version.accepts(gate.since):
            continue
        if gate.older == "refuse" and not _is_unused(name, out[name]):
            raise UnsupportedParameter(_needs(name, gate.since, version), param=name)
        del out[name]
        notes.append(f"dropped:{name}")


def _check_json_schema(out: dict[str, Any], version: ApiVersion) -> None:
    fmt = out.get("response_format")
    is_schema = isinstance(fmt, dict) and fmt.get("type") == "json_schema"
    if is_schema and not version.accepts(JSON_SCHEMA_SINCE):
        raise UnsupportedParameter(
            _needs("response_format", JSON_SCHEMA_SINCE, version, "of type 'json_schema' "),
            param="response_format",
        )


def _is_unused(name: str, value: Any) -> bool:
    if value is None or value is False or value == [] or value == {}:
        return True
    return (name == "response_format" and value == {"type": "text"}) or (
        name == "modalities" and value == ["text"]
    )


def _needs(name: str, since: Since, version: ApiVersion, what: str = "") -> str:
    needed = "the v1 API (api: v1)" if since == _V1_ONLY else f"api-version {since.describe()}"
    return (
        f"The parameter '{name}' {what}is not supported by this deployment's api-version "
        f"{version}: it needs {needed}. Ask the gateway's operator to upgrade the "
        f"deployment's api_version."
    )


def _finish(
    body: dict[str, Any],
    out: dict[str, Any],
    profile: DeploymentProfile,
    version: ApiVersion,
    notes: list[str],
    want_stream_usage: bool,
) -> Adaptation:
    stream = out.get("stream") is True
    asked = body.get("stream_options")
    wants = stream and isinstance(asked, dict) and asked.get("include_usage") is True
    options = out.get("stream_options")
    injected = False
    if stream and want_stream_usage and not wants and version.accepts(STREAM_OPTIONS_SINCE):
        out["stream_options"] = {**(options if isinstance(options, dict) else {})}
        out["stream_options"]["include_usage"] = True
        notes.append("added:stream_options.include_usage")
        injected = True
    for name in sorted(profile.unsupported_params):
        if name in out:
            del out[name]
            notes.append(f"dropped:{name}")
            injected = injected and name != "stream_options"
    changed = bool(notes)
    return Adaptation(
        body=out if changed else body,
        changed=changed,
        notes=tuple(notes),
        client_wants_usage=bool(wants),
        usage_injected=injected,
    )
