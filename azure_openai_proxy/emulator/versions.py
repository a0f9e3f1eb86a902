"""Which api-versions exist, and what each one accepts (wire reference, section 3).

Pure tables and lookups. Dated versions compare by their date; the v1 family
(`v1`, `preview`) sorts after every dated version.
"""

from __future__ import annotations

from dataclasses import dataclass

from azure_openai_proxy.emulator import assistant_routes, wire_errors

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
DATED_VERSIONS = frozenset(GA_VERSIONS + PREVIEW_VERSIONS)
V1_VERSIONS = ("v1", "preview")
_V1_DATE = "9999-12-31"

# The first version whose error bodies use OpenAI's newer `unknown_parameter` shape.
NEW_ERROR_SHAPE_SINCE = "2024-09-01"
REASONING_SINCE = "2024-12-01"
# The first version Azure enables each reasoning model on (wire reference, section 8),
# most specific name first; other reasoning models: REASONING_SINCE.
REASONING_SINCE_BY_MODEL = (
    ("o1-preview", "2024-09-01"),
    ("o1-mini", "2024-09-01"),
    ("o1", "2024-12-01"),
    ("o3-mini", "2024-12-01"),
    ("o3", "2025-04-01"),
    ("o4-mini", "2025-04-01"),
    ("codex-mini", "2025-04-01"),
    ("gpt-5", "2025-04-01"),
)
# Streams and bodies name the prompt's filter results `prompt_annotations` on these.
PROMPT_ANNOTATION_VERSIONS = frozenset(
    {"2023-06-01-preview", "2023-07-01-preview", "2023-08-01-preview"}
)
# Before this version streams carry no filter results at all.
FILTER_RESULTS_SINCE = "2023-06-01"

# The Assistants API (v2: `OpenAI-Beta: assistants=v2`), from 2024-05-01-preview.
ASSISTANTS_OPERATIONS = assistant_routes.OPERATIONS
RESPONSES_OPERATIONS = frozenset({"responses", "responses_compact", "responses_input_tokens",
                                  "response", "response_delete", "response_cancel",
                                  "response_input_items"})
_RESPONSES_SINCE = "2025-03-01"
# Operations that need a minimum dated version (and whether GA versions have them).
OPERATION_SINCE: dict[str, str] = {
    **dict.fromkeys(RESPONSES_OPERATIONS, _RESPONSES_SINCE),
    "image_edits": "2025-04-01",
    "batches": "2024-07-01",
    "batch_create": "2024-07-01",
    "batch": "2024-07-01",
    "batch_cancel": "2024-07-01",
    "realtime": "2024-10-01",
    # reinforcement fine-tuning's graders (azure-ai-docs' RFT guide: 2025-04-01-preview)
    "grader_run": "2025-04-01",
    "grader_validate": "2025-04-01",
    **dict.fromkeys(ASSISTANTS_OPERATIONS, "2024-05-01"),
}
# Every operation on a Responses object is the Responses API's: none is in a GA version.
PREVIEW_ONLY_OPERATIONS = RESPONSES_OPERATIONS | ASSISTANTS_OPERATIONS | {
    "speech", "image_edits", "realtime", "grader_run", "grader_validate"}


@dataclass(frozen=True)
class ApiVersion:
    """A request's api-version: `raw` as sent, `date` for comparisons."""

    raw: str
    date: str
    preview: bool

    @property
    def is_v1(self) -> bool:
        return self.date == _V1_DATE

    def at_least(self, since: str) -> bool:
        """True when this version accepts something first shipped on date `since`."""
        return self.date >= since

    @property
    def new_error_shape(self) -> bool:
        return self.at_least(NEW_ERROR_SHAPE_SINCE)

    @property
    def filter_results_key(self) -> str | None:
        """Name of the prompt filter results on this version (None: not sent)."""
        if self.raw in PROMPT_ANNOTATION_VERSIONS:
            return "prompt_annotations"
        return "prompt_filter_results" if self.at_least(FILTER_RESULTS_SINCE) else None


def reasoning_since(model: str) -> str:
    """The first api-version date on which Azure serves reasoning model `model`."""
    for prefix, since in REASONING_SINCE_BY_MODEL:
        if model.startswith(prefix):
            return since
    return REASONING_SINCE


def dated_version(raw: str | None) -> ApiVersion:
    """The api-version of a dated-API request; missing or unknown answers 404."""
    if raw is None or raw not in DATED_VERSIONS:
        raise wire_errors.resource_not_found()
    return ApiVersion(raw=raw, date=raw[:10], preview=raw.endswith("-preview"))


def v1_version(raw: str | None) -> ApiVersion:
    """The api-version of a v1 request: absent, `v1` or `preview`; anything else is 400."""
    if raw is None or raw in V1_VERSIONS or raw == "":
        return ApiVersion(raw=raw or "v1", date=_V1_DATE, preview=raw == "preview")
    raise wire_errors.bad_request("API version not supported")


def check_operation(operation: str, version: ApiVersion) -> None:
    """Raise Azure's answer when `operation` does not exist on `version`: a Responses API
    operation on a dated version before 2025-03-01-preview is a 400 naming that version
    ("Azure OpenAI Responses API is enabled only for api-version 2025-03-01-preview and
    later": Aider-AI/aider#4029 via litellm's BadRequestError, and projects quoting
    it as HTTP 400); any other a 404 `Resource not found`."""
    if operation_available(operation, version):
        return
    if operation in RESPONSES_OPERATIONS:
        raise wire_errors.bad_request(
            f"Azure OpenAI Responses API is enabled only for api-version "
            f"{_RESPONSES_SINCE}-preview and later"
        )
    raise wire_errors.resource_not_found()


def operation_available(operation: str, version: ApiVersion) -> bool:
    """Whether `operation` exists on `version` (unavailable ones answer 404)."""
    if version.is_v1:
        return True
    if operation in PREVIEW_ONLY_OPERATIONS and not version.preview:
        return False
    since = OPERATION_SINCE.get(operation)
    return since is None or version.at_least(since)
