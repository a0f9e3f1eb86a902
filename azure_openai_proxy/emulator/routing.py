"""Which operation a method and path name, on either URL family. Pure.

    /openai/deployments/{dep}/{op}?api-version=...   dated, deployment in the path
    /openai/{responses|files|batches|models}...       dated, deployment (if any) in the body
    /openai/fine_tuning/alpha/graders/{run|validate}   dated, no deployment
    /openai/{assistants|threads}...                    dated alone (emulator/assistants.py)
    /openai/v1/{op}                                    v1, deployment in the body's `model`
    /openai/v1/conversations..., GET chat/completions...   v1 only (dated: 404)
    /openai/realtime?deployment=D, /openai/v1/realtime?model=D   the Realtime WebSocket

`resolve` answers None for unknown paths and for a known path with the wrong method;
the app turns both into Azure's 404 `Resource not found`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from azure_openai_proxy.emulator import assistant_routes

# operation -> the deployment kind it needs (None: not deployment-bound)
OPERATION_KIND: dict[str, str | None] = {
    "chat": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "transcriptions": "transcription",
    "translations": "transcription",
    "speech": "speech",
    "image_generations": "images",
    "image_edits": "images",
    "responses": "chat",
    "responses_compact": "chat",
    "responses_input_tokens": None,  # `model` optional; a named one must exist
    "response": None,
    "response_delete": None,
    "response_cancel": None,
    "response_input_items": None,
    "files": None,
    "file_upload": None,
    "file": None,
    "file_delete": None,
    "file_content": None,
    "batches": None,
    "batch_create": None,
    "batch": None,
    "batch_cancel": None,
    "models": None,
    "model": None,
    "grader_run": None,  # a model grader names a base model, no deployment
    "grader_validate": None,
    "realtime": "realtime",
    "conversation_create": None,
    "conversation": None,
    "conversation_update": None,
    "conversation_delete": None,
    "conversation_items": None,
    "conversation_items_create": None,
    "chat_stored_list": None,
    "chat_stored": None,
    "chat_stored_update": None,
    "chat_stored_delete": None,
    "chat_stored_messages": None,
    **dict.fromkeys(assistant_routes.OPERATIONS, None),
}

# Azure's names for operations, as its 429 messages use them.
OPERATION_TITLE = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
    "transcriptions": "AudioTranscriptions_Create",
    "translations": "AudioTranslations_Create",
    "speech": "AudioSpeech_Create",
    "image_generations": "ImageGenerations_Create",
    "image_edits": "ImageEdits_Create",
    "responses": "Responses_Create",
    "responses_compact": "Responses_Compact",
    "realtime": "Realtime_Connect",
}

# The names OperationNotSupported's message gives ("The chatCompletion operation does not
# work with the specified model, gpt-4o-mini."), seen in llama_index#16503, langchainjs#2633,
# llama_index#6436 and an imageGenerations one; other operations keep OPERATION_TITLE.
UNSUPPORTED_NAME = {
    "chat": "chatCompletion",
    "completions": "completion",
    "embeddings": "embeddings",
    "image_generations": "imageGenerations",
}

_DEPLOYMENT_OPS = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "audio/transcriptions": "transcriptions",
    "audio/translations": "translations",
    "audio/speech": "speech",
    "images/generations": "image_generations",
    "images/edits": "image_edits",
}
_ID = r"([A-Za-z0-9_.:-]{1,200})"
# (pattern relative to /openai or /openai/v1, method, operation)
_SHARED_ROUTES = [
    (r"responses", "POST", "responses"),
    (r"responses/compact", "POST", "responses_compact"),
    (r"responses/input_tokens", "POST", "responses_input_tokens"),
    (rf"responses/{_ID}", "GET", "response"),
    (rf"responses/{_ID}", "DELETE", "response_delete"),
    (rf"responses/{_ID}/cancel", "POST", "response_cancel"),
    (rf"responses/{_ID}/input_items", "GET", "response_input_items"),
    (r"files", "GET", "files"),
    (r"files", "POST", "file_upload"),
    (rf"files/{_ID}", "GET", "file"),
    (rf"files/{_ID}", "DELETE", "file_delete"),
    (rf"files/{_ID}/content", "GET", "file_content"),
    (r"batches", "GET", "batches"),
    (r"batches", "POST", "batch_create"),
    (rf"batches/{_ID}", "GET", "batch"),
    (rf"batches/{_ID}/cancel", "POST", "batch_cancel"),
    (r"models", "GET", "models"),
    (r"fine_tuning/alpha/graders/run", "POST", "grader_run"),
    (r"fine_tuning/alpha/graders/validate", "POST", "grader_validate"),
    (rf"models/{_ID}", "GET", "model"),
    (r"realtime", "GET", "realtime"),  # a WebSocket; the deployment is in the query
]
# Azure serves the Conversations API and stored chat completions on the v1 API alone:
# the dated path is its 404.
_V1_ONLY_ROUTES = [
    (r"conversations", "POST", "conversation_create"),
    (rf"conversations/{_ID}", "GET", "conversation"),
    (rf"conversations/{_ID}", "POST", "conversation_update"),
    (rf"conversations/{_ID}", "DELETE", "conversation_delete"),
    (rf"conversations/{_ID}/items", "GET", "conversation_items"),
    (rf"conversations/{_ID}/items", "POST", "conversation_items_create"),
    (r"chat/completions", "GET", "chat_stored_list"),  # stored chat completions
    (rf"chat/completions/{_ID}", "GET", "chat_stored"),
    (rf"chat/completions/{_ID}", "POST", "chat_stored_update"),
    (rf"chat/completions/{_ID}", "DELETE", "chat_stored_delete"),
    (rf"chat/completions/{_ID}/messages", "GET", "chat_stored_messages"),
]
_V1_ROUTES = ([(path, "POST", op) for path, op in _DEPLOYMENT_OPS.items()] + _SHARED_ROUTES
              + _V1_ONLY_ROUTES)
# The Assistants API: on dated (preview) versions alone, not on the v1 API.
_COMPILED_SHARED = [(re.compile(p + r"/?"), m, o)
                    for p, m, o in _SHARED_ROUTES + assistant_routes.ROUTES]
_COMPILED_V1 = [(re.compile(p + r"/?"), m, o) for p, m, o in _V1_ROUTES]
_DEPLOYMENT_PATH = re.compile(r"deployments/([^/]{1,256})/(.+?)/?")


@dataclass(frozen=True)
class Route:
    """A resolved data-plane request: what to do, on which family, about what."""

    operation: str
    v1: bool
    path_deployment: str | None = None
    object_id: str | None = None
    ids: tuple[str, ...] = ()  # every id the path names (`threads/{t}/runs/{r}`)

    @property
    def kind(self) -> str | None:
        return OPERATION_KIND[self.operation]


def resolve(method: str, path: str) -> Route | None:
    """The route for `method path`, or None (Azure answers 404 for both cases)."""
    if not path.startswith("/openai/"):
        return None
    rest = path[len("/openai/") :]
    if rest.startswith("v1/"):
        return _match(_COMPILED_V1, method, rest[3:], v1=True)
    deployment = _DEPLOYMENT_PATH.fullmatch(rest)
    if deployment is not None:
        operation = _DEPLOYMENT_OPS.get(deployment.group(2))
        if operation is None or method != "POST":
            return None
        return Route(operation, v1=False, path_deployment=deployment.group(1))
    return _match(_COMPILED_SHARED, method, rest, v1=False)


def _match(
    routes: list[tuple[re.Pattern[str], str, str]], method: str, rest: str, *, v1: bool
) -> Route | None:
    for pattern, wanted, operation in routes:
        found = pattern.fullmatch(rest)
        if found is not None and wanted == method:
            ids = found.groups()
            return Route(operation, v1=v1, object_id=ids[0] if ids else None, ids=ids)
    return None
