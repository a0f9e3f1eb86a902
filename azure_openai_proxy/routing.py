"""Which operation a request asks for, and which Azure deployments may serve its model.

Pure functions over strings and settings; no I/O. Two jobs:

- `classify(method, raw_path, api_base)` turns the client's path into a `Target`: an
  Azure deployment operation (`chat/completions`, ...), a resource path Azure serves
  without a deployment (`files/{id}`, `responses`, ...), or something the gateway answers
  itself (`models`). Every client-controlled path segment is checked here, so nothing
  that could change an upstream URL's host, path depth or query gets further.
- `RoutingTable.resolve(model)` maps a client's model name to its `Pool` of deployments:
  the explicit mapping first, then the `.`/`:`-stripping fallback, then the default
  endpoint (the Go tool's env mode), else `ModelNotFound`.
- `servable(pool, target)` keeps the members that can serve the operation: a Foundry
  deployment (Azure AI model inference) serves only chat/completions and embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import (
    HostileInput,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    RouteNotFound,
)
from azure_openai_proxy.settings import DEPLOYMENT_NAME, DeploymentSettings, Settings

__all__ = [
    "DEPLOYMENT_OPERATIONS",
    "FOUNDRY_OPERATIONS",
    "BodyKind",
    "Pool",
    "RoutingTable",
    "Target",
    "classify",
    "servable",
]

BodyKind = Literal["json", "multipart"]

# Operations Azure serves under /openai/deployments/{deployment}/...
DEPLOYMENT_OPERATIONS: dict[str, BodyKind] = {
    "chat/completions": "json",
    "completions": "json",
    "embeddings": "json",
    "audio/transcriptions": "multipart",
    "audio/translations": "multipart",
    "audio/speech": "json",
    "images/generations": "json",
    "images/edits": "multipart",
    "images/variations": "multipart",
}

# What Azure AI model inference (`api: foundry`) serves, under {endpoint}/models/.
FOUNDRY_OPERATIONS = frozenset({"chat/completions", "embeddings"})

# Azure serves these under /openai/{path} with the deployment named in the body.
RESOURCE_ROOTS = frozenset(
    {
        "responses", "files", "batches", "assistants", "threads", "vector_stores",
        "fine_tuning", "uploads", "conversations",
    }
)
_MAX_RESOURCE_DEPTH = 7
# The names (not ids) in resource paths under RESOURCE_ROOTS. The gateway reads these
# names exactly (what a budget refuses, whose objects a path names, which GET is a list),
# while Azure may read `fine_tuning/Jobs` as `fine_tuning/jobs`: a name in other letters
# would pass those checks and still reach the same operation. OpenAI spells every one in
# lower case, so any other spelling is refused as an unknown URL, as a root already is.
_RESOURCE_NAMES = RESOURCE_ROOTS | frozenset(
    {
        "alpha", "cancel", "checkpoints", "complete", "content", "events", "file_batches",
        "graders", "input_items", "items", "jobs", "messages", "parts", "pause", "resume",
        "run", "runs", "search", "steps", "submit_tool_outputs", "validate", "evals",
        "compact", "input_tokens", "permissions",
    }
)
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.]{1,200}\Z")
# A fine-tuned model or checkpoint id holds `:` (`ft:gpt-4o-mini-2024-07-18:org:name:
# ckpt-step-100`): let through only where OpenAI puts one in a resource path,
# `fine_tuning/checkpoints/{id}/...` (the upstream URL percent-encodes it, translate.py).
_MODEL_ID_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.:]{1,200}\Z")
_MODEL_ID_AT = ("fine_tuning", "checkpoints")
# Responses operations under `responses/`, not ids: POST only.
_RESPONSES_OPERATIONS = frozenset({"responses/compact", "responses/input_tokens"})
_FALLBACK_STRIP = re.compile(r"[.:]")
# Characters that can never be in a model name we would put into a URL.
_URL_BREAKERS = re.compile(r"[/\\?#%\s\x00-\x1f\x7f]")
MAX_MODEL_NAME = 256
# The default endpoint's stand-in deployment for resource calls: never in a URL (files,
# batches... are served under /openai/{path}), but it must be a valid DeploymentSettings.
_HOME_MODEL = "(default endpoint)"
_HOME_DEPLOYMENT = "default"
_DYNAMIC_POOLS = 1024


@dataclass(frozen=True, slots=True)
class Target:
    """What the client asked for, in the gateway's terms."""

    kind: Literal["deployment", "resource", "models", "model"]
    operation: str  # "chat/completions" for a deployment; "files/abc/content" for a resource
    path_model: str | None = None  # a model named in the path (engines/..., native Azure)
    native: bool = False  # came in on an Azure-native path (AzureOpenAI clients)

    @property
    def body_kind(self) -> BodyKind | None:
        """The body a deployment operation takes; resources go by their content-type."""
        if self.kind == "deployment":
            return DEPLOYMENT_OPERATIONS[self.operation]
        return None


def _segments(raw_path: str) -> list[str]:
    """Split on '/' first, then percent-decode each segment: `a%2Fb` stays one segment."""
    parts = [unquote(part) for part in raw_path.split("/") if part]
    return parts


def _check_segment(segment: str, model_id: bool = False) -> str:
    if model_id:  # a fine-tuned model's id: `:` too, and never `..` (no OpenAI id has one)
        if not _MODEL_ID_SEGMENT.match(segment) or ".." in segment:
            raise HostileInput(
                "A fine-tuned model or checkpoint id contains characters that are not "
                "allowed (letters, digits, '-', '_', '.' and ':' only; no '..').",
                param="path")
        return segment
    if not _SEGMENT.match(segment) or segment in (".", ".."):
        raise HostileInput(
            "A path segment contains characters that are not allowed "
            "(letters, digits, '-', '_' and '.' only).",
            param="path",
        )
    return segment


def _openai_style(method: str, parts: list[str], native: bool) -> Target:
    path = "/".join(parts)
    if parts[:2] == ["chat", "completions"] and (method != "POST" or len(parts) > 2):
        return _stored_chat(method, parts, native)
    if path in DEPLOYMENT_OPERATIONS:
        _require(method, "POST")
        return Target("deployment", path, native=native)
    if len(parts) >= 3 and parts[0] in ("engines", "deployments"):
        operation = "/".join(parts[2:])
        if operation in DEPLOYMENT_OPERATIONS:
            _require(method, "POST")
            return Target("deployment", operation, path_model=parts[1], native=native)
    if path == "models":
        _require(method, "GET")
        return Target("models", "models")
    if len(parts) == 2 and parts[0] == "models":
        if method == "DELETE":  # deliberately: the gateway answers models itself
            raise MethodNotAllowed(
                "Method DELETE is not allowed here: the gateway answers the model list "
                "from its configuration. Delete a fine-tuned model on Azure itself.",
                allow=("GET",))
        _require(method, "GET")
        return Target("model", "models", path_model=parts[1])
    if parts and parts[0] in RESOURCE_ROOTS and len(parts) <= _MAX_RESOURCE_DEPTH:
        _require(method, "GET", "POST", "DELETE")
        if path in _RESPONSES_OPERATIONS:
            _require(method, "POST")
        model_id = tuple(parts[:2]) == _MODEL_ID_AT
        for index, part in enumerate(parts[1:], 1):
            _check_segment(part, model_id and index == 2)
            # A trailing dot too: front ends that follow Windows' path rules read `jobs.`
            # as `jobs`; no OpenAI name or id ends with one.
            if (part.lower() in _RESOURCE_NAMES and not part.islower()) or part[-1] == ".":
                raise RouteNotFound(f"Unknown request URL: {method} /{path}. Please check "
                                    f"the URL (its names are in lower case, with no "
                                    f"trailing dot).")
        return Target("resource", path, native=native)
    raise RouteNotFound(f"Unknown request URL: {method} /{path}. Please check the URL.")


def _stored_chat(method: str, parts: list[str], native: bool) -> Target:
    """Stored chat completions (made with `store: true`), a resource: listed
    (`GET chat/completions`), read, updated (POST) or deleted by id, their messages
    listed (`chat/completions/{id}/messages`). Only POST `chat/completions` makes one."""
    if len(parts) == 2:
        _require(method, "GET", "POST")
    elif len(parts) == 3:
        _require(method, "GET", "POST", "DELETE")
    elif len(parts) == 4 and parts[3] == "messages":
        _require(method, "GET")
    else:
        raise RouteNotFound(f"Unknown request URL: {method} /{'/'.join(parts)}. Please "
                            f"check the URL.")
    if len(parts) > 2:
        _check_segment(parts[2])
    return Target("resource", "/".join(parts), native=native)


def _require(method: str, *allowed: str) -> None:
    # HEAD is GET without the body (RFC 9110 9.3.2): allowed wherever GET is.
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise MethodNotAllowed(
            f"Method {method} is not allowed here; use {' or '.join(allowed)}.", allow=allowed)


def classify(method: str, raw_path: str, api_base: str) -> Target:
    """Map a request's method and raw (still percent-encoded) path to a `Target`."""
    parts = _segments(raw_path)
    if len(parts) > 16:
        raise RouteNotFound("Unknown request URL: the path is too long.")
    if parts[:2] == ["openai", "deployments"] and len(parts) >= 4:
        operation = "/".join(parts[3:])
        if operation not in DEPLOYMENT_OPERATIONS:
            raise RouteNotFound(f"Unknown request URL: {method} /{'/'.join(parts)}.")
        _require(method, "POST")
        return Target("deployment", operation, path_model=parts[2], native=True)
    if parts[:2] == ["openai", "v1"]:
        return _openai_style(method, parts[2:], native=False)
    if parts[:1] == ["openai"] and len(parts) > 1:
        return _openai_style(method, parts[1:], native=True)
    base = [p for p in api_base.split("/") if p]
    if base and parts[: len(base)] == base:
        return _openai_style(method, parts[len(base):], native=False)
    return _openai_style(method, parts, native=False)


@dataclass(frozen=True, slots=True)
class Pool:
    """The deployments that may serve one client model name."""

    model: str
    deployments: tuple[DeploymentSettings, ...]
    # Made for a client's own model name (env mode's default endpoint): the allow-list
    # judges it by that name alone (gateway/governed.py `pool_allowed`).
    dynamic: bool = False
    # Made for one request (a servable() subset, a sticky deployment): the balancer does
    # not keep its members. It says nothing about how the allow-list judges the pool.
    transient: bool = False
    # The members that serve every operation (all but Foundry's), found once: the
    # `deployments` tuple itself when that is all of them (the request path checks that).
    general: tuple[DeploymentSettings, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        general = tuple(d for d in self.deployments if d.api != "foundry")
        if len(general) == len(self.deployments):
            general = self.deployments
        object.__setattr__(self, "general", general)


def servable(pool: Pool, target: Target) -> Pool:
    """`pool` with only the members that can serve `target` (most pools: itself).

    A Foundry deployment pooled with Azure OpenAI ones takes its share of chat and
    embeddings; images, audio, files... go to the others. A pool of Foundry deployments
    alone answers those with a 400 naming what it serves."""
    if pool.general is pool.deployments or (
        target.kind == "deployment" and target.operation in FOUNDRY_OPERATIONS
    ):
        return pool
    if not pool.general:
        what = target.operation.split("/")[0] if target.kind == "resource" else target.operation
        raise InvalidRequest(
            f"The model '{pool.model}' is served by Azure AI Foundry model deployments, "
            f"which answer only chat/completions and embeddings, not {what}.",
            param="model", code="operation_not_supported",
        )
    return Pool(pool.model, pool.general, dynamic=pool.dynamic, transient=True)


def check_model_name(model: str) -> str:
    if not model or len(model) > MAX_MODEL_NAME or _URL_BREAKERS.search(model):
        raise HostileInput(
            "The model name is empty, too long, or contains characters that cannot be "
            "part of a model or deployment name ('/', '?', '#', '%', spaces, control "
            "characters).",
            param="model",
        )
    return model


class RoutingTable:
    """Client model name -> `Pool`, built once per settings value."""

    def __init__(self, settings: Settings) -> None:
        by_model: dict[str, list[DeploymentSettings]] = {}
        by_deployment: dict[str, list[DeploymentSettings]] = {}
        for deployment in settings.deployments:
            by_model.setdefault(deployment.model_name, []).append(deployment)
            by_deployment.setdefault(deployment.deployment_name, []).append(deployment)
        self._pools = {name: Pool(name, tuple(ds)) for name, ds in by_model.items()}
        self._by_deployment = {
            name: Pool(name, tuple(ds)) for name, ds in by_deployment.items()
        }
        self._fallback = settings.model_fallback
        self._settings = settings
        # Built once, here: a resource call that names no model (GET /v1/files) goes to
        # the default endpoint's resource, which needs no deployment in its URL.
        # Env mode: a model sent to the default endpoint is one deployment, made (and
        # validated) once per name, not on every request. Bounded: the names are clients'.
        self._dynamic: BoundedCache[str, Pool] = BoundedCache(_DYNAMIC_POOLS)
        endpoint = settings.default_endpoint
        self._home = None if endpoint is None else Pool(
            "", (self._dynamic_deployment(_HOME_MODEL, _HOME_DEPLOYMENT, endpoint),), True
        )

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(self._pools)

    @property
    def pools(self) -> tuple[Pool, ...]:
        return tuple(self._pools.values())

    def deployments_named(self, name: str) -> tuple[DeploymentSettings, ...]:
        """The configured deployments of that name, on every endpoint that has one."""
        pool = self._by_deployment.get(name)
        return pool.deployments if pool is not None else ()

    def resolve(self, model: str) -> Pool:
        pool = self._pools.get(model) or self._by_deployment.get(model)
        if pool is not None:
            return pool  # a configured name: checked only when it is not one
        pool = self._dynamic.get(model)
        if pool is not None:
            return pool
        check_model_name(model)
        candidate = _FALLBACK_STRIP.sub("", model) if self._fallback else model
        pool = self._pools.get(candidate) or self._by_deployment.get(candidate)
        if pool is not None:
            return pool
        endpoint = self._settings.default_endpoint
        if endpoint is not None and DEPLOYMENT_NAME.match(candidate):
            deployment = self._dynamic_deployment(model, candidate, endpoint)
            return self._dynamic.put(model, Pool(model, (deployment,), True))
        raise ModelNotFound(model, self.model_names)

    def resolve_home(self) -> Pool:
        """The default endpoint as a pool, for resource calls that name no model."""
        if self._home is None:
            raise ModelNotFound("(none)", self.model_names)
        return self._home

    def _dynamic_deployment(self, model: str, deployment: str, endpoint: str) -> DeploymentSettings:
        settings = self._settings
        key = settings.default_api_key
        # Made once per model name (then cached): without an api-version set by the
        # operator, DeploymentSettings chooses one for what the name says it serves.
        version = settings.default_api_version if settings.default_api_version_explicit else None
        return DeploymentSettings.model_validate({
            "model_name": model,
            "deployment_name": deployment,
            "endpoint": endpoint,
            "api_key": key,
            "api_version": version,
            "auth": "key" if key is not None else "passthrough",
        })
