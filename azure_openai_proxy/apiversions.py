"""Azure OpenAI api-versions: parsing, ordering, "does this version accept X?", and the
table of known versions: which exist, which Azure retired, and which model families need
a newer version than the gateway's default (wire reference, sections 3 and 8).

Dated versions are `YYYY-MM-DD` (GA) or `YYYY-MM-DD-preview`. They order by date, and a
preview sorts before the GA of the same date. The v1 API's `v1`/`preview` (and `latest`)
sort after every dated version: they accept everything.

Availability compares dates, not positions in a list: a feature first shipped in
`2024-09-01-preview` is in every later preview and in any GA dated on or after its GA
date (by default its preview date), so in `2024-10-21` but not in `2024-06-01`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_API_VERSION",
    "GA_VERSIONS",
    "MODEL_NEEDS",
    "MODEL_OPERATIONS",
    "NEWEST_PREVIEW",
    "OPERATION_NEEDS",
    "PREVIEW_VERSIONS",
    "RETIRED",
    "V1_ONLY_ROOTS",
    "ApiVersion",
    "ModelNeed",
    "OperationNeed",
    "Retirement",
    "Since",
    "VersionChoice",
    "choose_api_version",
    "deployment_need",
    "is_reasoning",
    "model_need",
    "model_operations",
    "operation_need",
    "operation_version",
    "parse_api_version",
    "reasoning_need",
    "support_warning",
    "v1_only",
]

_V1_NAMES = frozenset({"v1", "preview", "latest"})
_V1_DATE = "9999-12-31"


@dataclass(frozen=True, slots=True)
class Since:
    """When something first shipped: a preview date and, if later, a GA date."""

    preview: str  # YYYY-MM-DD of the first -preview version
    ga: str | None = None  # YYYY-MM-DD of the first GA version; None: same as preview

    def describe(self) -> str:
        ga = f" (GA {self.ga} or later)" if self.ga else ""
        return f"{self.preview}-preview or later{ga}"


@dataclass(frozen=True, slots=True, order=True)
class ApiVersion:
    """A parsed api-version; instances order as Azure released them."""

    date: str
    ga: bool  # False sorts first: a preview comes before the GA of the same date
    raw: str

    @property
    def is_v1(self) -> bool:
        return self.date == _V1_DATE

    def accepts(self, since: Since) -> bool:
        """Whether a request on this version may use what shipped `since`."""
        if self.is_v1:
            return True
        first = since.ga if self.ga and since.ga else since.preview
        return self.date >= first

    def __str__(self) -> str:
        return self.raw


@functools.lru_cache(maxsize=256)  # a handful of versions, parsed on every request
def parse_api_version(raw: str | None) -> ApiVersion:
    """Parse `raw`; None, `v1`, `preview` and `latest` are the v1 API (accepts everything).

    Raises ValueError for anything else that is not `YYYY-MM-DD[-preview]`.
    """
    if raw is None or raw in _V1_NAMES:
        return ApiVersion(date=_V1_DATE, ga=False, raw=raw or "v1")
    date, preview = (raw[:-8], True) if raw.endswith("-preview") else (raw, False)
    if not _is_date(date):
        raise ValueError(f"not an Azure OpenAI api-version: {raw!r}")
    return ApiVersion(date=date, ga=not preview, raw=raw)


def _is_date(text: str) -> bool:
    return (
        len(text) == 10
        and text[4] == text[7] == "-"
        and (text[:4] + text[5:7] + text[8:]).isdigit()
    )


# -- the version table --------------------------------------------------------------------
# Facts from the wire reference (sections 3 and 8) and Azure's "API preview lifecycle"
# page. To follow Azure, edit these lines: nothing else in the gateway lists versions (the
# emulator, a sibling, keeps its own copy in emulator/versions.py).

GA_VERSIONS = ("2022-12-01", "2023-05-15", "2024-02-01", "2024-06-01", "2024-10-21")
PREVIEW_VERSIONS = tuple(
    f"{day}-preview"
    for day in (
        "2022-03-01", "2022-06-01", "2023-03-15", "2023-06-01", "2023-07-01", "2023-08-01",
        "2023-09-01", "2023-10-01", "2023-12-01", "2024-02-15", "2024-03-01", "2024-04-01",
        "2024-05-01", "2024-07-01", "2024-08-01", "2024-09-01", "2024-10-01", "2024-11-01",
        "2024-12-01", "2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01",
    )
)
DEFAULT_API_VERSION = GA_VERSIONS[-1]  # the last dated GA: every OpenAI route but a few
NEWEST_PREVIEW = PREVIEW_VERSIONS[-1]  # the last dated preview: accepts every model


@dataclass(frozen=True, slots=True)
class Retirement:
    """Azure stopped answering a version on `date` (YYYY-MM-DD); `move_to` replaces it."""

    date: str
    move_to: str


# Retired on 2024-07-01 ("API preview lifecycle"): requests on them are refused.
RETIRED: dict[str, Retirement] = dict.fromkeys(
    ("2023-03-15-preview", "2023-07-01-preview", "2023-08-01-preview", "2023-09-01-preview",
     "2023-12-01-preview"),
    Retirement("2024-07-01", NEWEST_PREVIEW),
)
# Azure supports only its latest three previews, and these two kept by name.
_SUPPORTED_PREVIEWS = 3
_KEPT_PREVIEWS = frozenset({"2023-06-01-preview", "2023-10-01-preview"})


@dataclass(frozen=True, slots=True)
class ModelNeed:
    """A model family that needs a newer api-version than most: on an older one, Azure
    answers 400 (reasoning models: "Model {modelName} is enabled only for api versions
    2024-12-01-preview and later") or 404 (a preview-only operation; the Responses API:
    400 "... enabled only for api-version 2025-03-01-preview and later")."""

    family: str  # as Azure names the model in its messages
    kind: str  # "reasoning models", "realtime models"... for messages
    since: Since
    preview_only: bool = False  # its operation exists on preview versions only

    def accepted_by(self, version: ApiVersion) -> bool:
        if version.is_v1:
            return True
        return version.accepts(self.since) and not (self.preview_only and version.ga)

    def describe(self) -> str:
        return f"{self.kind} need >= {self.since.preview}-preview" + (
            " (previews only)" if self.preview_only else ""
        )


def _need(family: str, kind: str, since: str, preview_only: bool = False) -> ModelNeed:
    return ModelNeed(family, kind, Since(since), preview_only)


_REASONING = "reasoning models"
# Most specific first: the first pattern that matches a name decides. A pattern matches
# at the start of a name or after a separator (`my-o3-mini`, `o3-mini-2025-01-31`), so
# `gpt-4o` is not `o4` and `o365-bot` is no `o3`. gpt-4.1 is not here: the wire
# reference names no minimum version for it, so the default serves it.
MODEL_NEEDS: tuple[tuple[str, ModelNeed], ...] = (
    (r"o1-preview", _need("o1-preview", _REASONING, "2024-09-01")),
    (r"o1-mini", _need("o1-mini", _REASONING, "2024-09-01")),
    (r"o1", _need("o1", _REASONING, "2024-12-01")),
    (r"o3-mini", _need("o3-mini", _REASONING, "2024-12-01")),
    (r"o3", _need("o3", _REASONING, "2025-04-01")),
    (r"o4-mini", _need("o4-mini", _REASONING, "2025-04-01")),
    (r"codex-mini", _need("codex-mini", _REASONING, "2025-04-01")),
    # gpt-5-chat is the family's chat model, not a reasoning one: Azure takes its
    # `max_tokens` and `temperature` (stanfordnlp/dspy#8724, langgenius/dify-official-
    # plugins#2024), which compat would drop or rename for a reasoning model. Only this
    # name: gpt-5.1-chat and later refuse `max_tokens` (Zackriya-Solutions/meetily#364).
    # `chat` as a word: a `gpt-5-chatbot` deployment is still the reasoning gpt-5.
    (r"gpt-?5-chat(?![a-z])", _need("gpt-5-chat", "gpt-5 chat models", "2025-04-01")),
    (r"gpt-?5", _need("gpt-5", _REASONING, "2025-04-01")),
    # The dated realtime endpoint takes previews from 2024-10-01-preview on.
    (r"gpt-4o(?:-mini)?-realtime|gpt-realtime",
     _need("realtime", "realtime models", "2024-10-01", preview_only=True)),
    # Audio output in chat (`modalities`, `audio`) from 2025-01-01-preview on.
    (r"gpt-4o(?:-mini)?-audio|gpt-audio", _need("audio", "audio models", "2025-01-01")),
    # Speech (TTS) is served on preview versions only.
    (r"tts(?:-hd)?|gpt-4o-mini-tts", _need("tts", "speech models", "2024-02-15",
                                           preview_only=True)),
)
_NEEDS = tuple(
    (re.compile(rf"(?:^|[^a-z0-9])(?:{pattern})(?![0-9])"), need) for pattern, need in MODEL_NEEDS
)


# Any o-series or gpt-5 name: a reasoning model, even one the table above does not list
# (`o4`, `my-o4`, `o1-pro`...). Such a name gets Azure's general rule for reasoning models.
# With the table, the one place that says which names are reasoning models: compat's
# infer_family asks model_need, so a name's family and its api-version always agree.
_REASONING_NAME = re.compile(r"(?:^|[^a-z0-9])(?:o[134]|gpt-?5)(?![0-9])")
_ANY_REASONING = ModelNeed("a reasoning model", _REASONING, Since("2024-12-01"))


def model_need(*names: str) -> ModelNeed | None:
    """The need of the first family any name (model, deployment) belongs to; for an
    o-series or gpt-5 name the table does not list, the general rule for reasoning models;
    else None."""
    lowered = [name.lower() for name in names]
    for pattern, need in _NEEDS:
        if any(pattern.search(name) for name in lowered):
            return need
    if any(_REASONING_NAME.search(name) for name in lowered):
        return _ANY_REASONING
    return None


def is_reasoning(need: ModelNeed | None) -> bool:
    """Whether `need` is a reasoning model's (compat then renames and drops parameters)."""
    return need is not None and need.kind == _REASONING


def deployment_need(deployment_name: str, model_name: str, family: str = "auto") -> ModelNeed | None:
    """What a deployment serves, as far as api-versions go. `family` is its configured
    `model_family`: `reasoning` for a name the table does not know means Azure's general
    rule for reasoning models; `standard` means no reasoning need whatever the name."""
    need = model_need(deployment_name, model_name)
    reasoning = is_reasoning(need)
    if family == "standard" and reasoning:
        return None
    if family == "reasoning" and not reasoning:
        return _ANY_REASONING
    return need


def reasoning_need(need: ModelNeed | None) -> ModelNeed:
    """The version rule for a deployment known to serve a reasoning model."""
    return need if need is not None and is_reasoning(need) else _ANY_REASONING


@dataclass(frozen=True, slots=True)
class VersionChoice:
    """The api-version a deployment uses, and why: `explicit`, `default`, or
    `chosen for o3-mini: reasoning models need >= 2024-12-01-preview`."""

    version: str
    reason: str


def choose_api_version(need: ModelNeed | None, default: str = DEFAULT_API_VERSION) -> VersionChoice:
    """The version for a deployment that configures none: `default` when it serves the
    model, else the newest known dated preview. Not the oldest version that enables the
    model: Azure keeps only its latest three previews, so that one would soon be refused."""
    if need is None or need.accepted_by(parse_api_version(default)):
        return VersionChoice(default, "default")
    return VersionChoice(NEWEST_PREVIEW, f"chosen for {need.family}: {need.describe()}")


@dataclass(frozen=True, slots=True)
class OperationNeed:
    """An operation Azure serves only from some api-version on: on an older one the dated
    API answers 404 `Resource not found` (wire reference, sections 1 and 8)."""

    title: str  # for messages: "the Responses API"
    since: Since
    preview_only: bool = False  # no GA dated version serves it (the v1 API does)

    def accepted_by(self, version: ApiVersion) -> bool:
        if version.is_v1:
            return True
        return version.accepts(self.since) and not (self.preview_only and version.ga)

    def describe(self) -> str:
        if self.preview_only:
            return f"{self.since.preview}-preview or later (preview versions only)"
        return self.since.describe()  # names the first GA too (batches: 2024-10-21)

    def refusal(self, version: str) -> str:
        """The message for an explicit version that cannot serve the operation (a client's:
        it names no deployment, whose name is the operator's)."""
        return (
            f"{self.title[0].upper()}{self.title[1:]} needs api-version {self.describe()}; "
            f"the deployment is configured with api-version {version}, on which "
            f"Azure does not serve it. Configure a newer one (`api_version`, or "
            f"AZURE_OPENAI_API_VER), or none: the gateway then chooses one per request."
        )


def _op(title: str, since: str, preview_only: bool = False,
        ga: str | None = None) -> OperationNeed:
    return OperationNeed(title, Since(since, ga), preview_only)


_ASSISTANTS = "2024-05-01"  # Assistants v2 (`OpenAI-Beta: assistants=v2`, vector stores)
# Keyed by the gateway's operation: a deployment operation's whole path, or a resource's
# first segment (`responses/{id}/input_items` is `responses`) or whole path. An operation not listed
# is served on every version the gateway sends. The v1 API (`api: v1`) serves them all
# without an api-version. Realtime's WebSocket chooses its own version from the same
# facts (gateway/realtime_wire.py); it is listed for check-config and the unit tests.
OPERATION_NEEDS: dict[str, OperationNeed] = {
    "responses": _op("the Responses API", "2025-03-01", preview_only=True),
    "vector_stores": _op("vector stores", _ASSISTANTS, preview_only=True),
    "assistants": _op("the Assistants API", _ASSISTANTS, preview_only=True),
    "threads": _op("the Assistants API's threads", _ASSISTANTS, preview_only=True),
    "batches": _op("the Batch API", "2024-07-01", ga="2024-10-21"),  # not in 2024-06-01
    "audio/speech": _op("speech (text to speech)", "2024-02-15", preview_only=True),
    "images/edits": _op("image edits", "2025-04-01", preview_only=True),
    "realtime": _op("the Realtime API", "2024-10-01", preview_only=True),
    # Reinforcement fine-tuning's graders: not published for a dated version (Azure's
    # REST reference shows the v1 path); 2025-04-01-preview is the version RFT came with
    # (Azure's RFT guide and blog), as the emulator takes it (emulator/versions.py).
    # Their whole paths: the rest of `fine_tuning/` is served on GA versions.
    "fine_tuning/alpha/graders/run": _op("grader runs", "2025-04-01", preview_only=True),
    "fine_tuning/alpha/graders/validate": _op("grader validation", "2025-04-01",
                                              preview_only=True),
}

# Resources no dated api-version serves, only the v1 API: Azure's REST reference lists the
# Conversations API under `/openai/v1/conversations...` alone (it came after the last
# dated preview, 2025-04-01-preview), and the dated path answers 404 "Resource not found"
# on every version; stored chat completions are read, listed, updated and deleted under
# `/openai/v1/chat/completions...` alone too (a resource `chat/...`: the chat itself is a
# deployment operation, sent as before). A dated deployment sends them to its resource's
# v1 API (`{endpoint}/openai/v1/...`, no api-version: translate.py), which every
# resource serves.
V1_ONLY_ROOTS = frozenset({"conversations", "chat"})


def v1_only(operation: str) -> bool:
    """Whether the resource `operation` (`conversations/{id}/items`...) is served by the
    v1 API alone."""
    return operation.partition("/")[0] in V1_ONLY_ROOTS


# What a model offers that needs a version of its own (check-config warns when an explicit
# version cannot serve it). Matched as MODEL_NEEDS is, the first pattern deciding: a
# speech, realtime or audio model offers no Responses API.
MODEL_OPERATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"tts(?:-hd)?|gpt-4o-mini-tts", ("audio/speech",)),
    (r"gpt-4o(?:-mini)?-realtime|gpt-realtime", ("realtime",)),
    (r"gpt-4o(?:-mini)?-(?:audio|transcribe)|gpt-audio|whisper", ()),
    (r"gpt-image", ("images/edits",)),
    (r"gpt-4o|gpt-4\.1|gpt-?5|o1|o3|o4-mini|codex-mini|computer-use", ("responses",)),
)
_OFFERS = tuple(
    (re.compile(rf"(?:^|[^a-z0-9])(?:{pattern})(?![0-9])"), operations)
    for pattern, operations in MODEL_OPERATIONS
)


def model_operations(*names: str) -> tuple[str, ...]:
    """The operations in OPERATION_NEEDS that a model (by its model or deployment name)
    offers; () for a name the table does not know."""
    lowered = [name.lower() for name in names]
    for pattern, operations in _OFFERS:
        if any(pattern.search(name) for name in lowered):
            return operations
    return ()


def operation_need(operation: str) -> OperationNeed | None:
    """What `operation` (a deployment operation, or a resource path) needs, or None."""
    need = OPERATION_NEEDS.get(operation)
    if need is None and "/" in operation:
        need = OPERATION_NEEDS.get(operation[: operation.index("/")])
    return need


def operation_version(version: str, explicit: bool, need: OperationNeed) -> str | None:
    """The api-version to send for an operation with `need` on a deployment whose
    version (configured, or chosen at load for its model) is `version`.

    `version` itself when it serves the operation. Else, for a version the gateway chose,
    the newest of what the model and the operation need: the newest known preview, which
    serves every model and operation in the table and is never below the version chosen
    for the model. An `explicit` version is never changed: None, and the caller refuses
    the request with `need.refusal(...)` rather than sending what Azure answers with 404.
    """
    parsed = parse_api_version(version)
    if need.accepted_by(parsed):
        return version
    if explicit:
        return None
    return max(parsed, parse_api_version(NEWEST_PREVIEW)).raw


def support_warning(raw: str, today: str) -> str | None:
    """Why a configured version is a problem on `today` (YYYY-MM-DD), or None."""
    retired = RETIRED.get(raw)
    if retired is not None:
        tense = "was retired" if retired.date <= today else "retires"
        return f"api-version {raw} {tense} by Azure on {retired.date}: move to {retired.move_to}"
    if parse_api_version(raw).is_v1 or raw in GA_VERSIONS or raw in _KEPT_PREVIEWS:
        return None
    if raw not in PREVIEW_VERSIONS:
        return f"api-version {raw} is not one the gateway knows: Azure may answer 404"
    if raw not in PREVIEW_VERSIONS[-_SUPPORTED_PREVIEWS:]:
        return (
            f"api-version {raw} is past Azure's preview support (only the latest three "
            f"previews stay supported): move to {NEWEST_PREVIEW}"
        )
    return None
