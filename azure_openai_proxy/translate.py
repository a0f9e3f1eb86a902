"""How an OpenAI-style request becomes an Azure request: URL, headers, `model` field.

Pure functions. The URL rules (from the wire reference):

    dated API, deployment operation:
        {endpoint}/openai/deployments/{deployment}/{operation}?api-version=V
    dated API, resource (responses, files, batches, ...):
        {endpoint}/openai/{path}?api-version=V[&allowed client query]
    v1 API (and a dated deployment's conversations, which only the v1 API serves):
        {endpoint}/openai/v1/{operation or path}[?api-version=preview]
    Foundry (Azure AI model inference; chat/completions and embeddings only):
        {endpoint}/models/{operation}?api-version=V   (an endpoint ending in /models
        is taken as it is: the portal shows it that way)

On the v1 API, Foundry and resource calls, `model` in the body is the deployment name.

The endpoint keeps its own path (an APIM prefix), exactly one `api-version` is sent,
and the deployment name and every path segment are percent-encoded after `routing`
has checked them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlencode, urlsplit

from azure_openai_proxy import __version__
from azure_openai_proxy.apiversions import (
    OPERATION_NEEDS,
    OperationNeed,
    operation_need,
    operation_version,
    parse_api_version,
    v1_only,
)
from azure_openai_proxy.auth import Caller
from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.errors import AuthenticationFailed, AzureKeyRequired, UnsupportedParameter
from azure_openai_proxy.routing import Target
from azure_openai_proxy.settings import API_VERSION, DeploymentSettings

__all__ = [
    "RESOURCE_QUERY_PARAMS",
    "api_version_for",
    "azure_auth_headers",
    "forwarded_headers",
    "honoured_client_version",
    "key_header",
    "names_deployment_in_body",
    "relayed_response_headers",
    "serves_operation",
    "upstream_url",
]

# Query parameters a client may send to list/paginate resources; all else is dropped
# (ChatGPT-Next-Web's `path=`, a second `api-version`, ...).
RESOURCE_QUERY_PARAMS = frozenset(
    {"limit", "after", "before", "order", "purpose", "include", "include[]", "filter",
     "run_id", "stream", "starting_after", "model"}
)
# And a list's metadata filters (`metadata[topic]=demo`: stored chat completions), by a
# key as long as a metadata key may be (64 characters).
_METADATA_FILTER = re.compile(r"metadata\[[^\[\]]{1,64}\]\Z")

_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "openai-beta", "x-ms-client-request-id")
_USER_AGENT = f"azure-openai-proxy/{__version__}"

# Response headers worth relaying to the client; the rest (hop-by-hop, Azure's
# internals, content-length of a body we may rewrite) are not.
_RELAYED_EXACT = frozenset(
    {"content-type", "content-disposition", "x-request-id", "apim-request-id", "x-ms-region",
     "retry-after", "retry-after-ms", "openai-processing-ms", "openai-version"}
)


def api_version_for(
    deployment: DeploymentSettings, target: Target, client_version: str | None, honour: bool
) -> str | None:
    """The one api-version to send, or None for the v1 API's default: a native client's
    own when honoured, else the deployment's, or a newer one its operation needs."""
    if deployment.api == "v1":
        version = deployment.api_version if deployment.api_version in ("preview",) else None
        return version
    if deployment.api == "foundry":
        # A native client's version is Azure OpenAI's, not the model inference API's.
        return deployment.api_version
    if target.kind == "resource" and v1_only(target.operation):
        return None  # the v1 API's default: no dated version serves it, a client's neither
    if client_version is not None and honoured_client_version(target, client_version, honour):
        return client_version
    if target.kind == "deployment" and target.operation not in OPERATION_NEEDS:
        return deployment.api_version  # chat, the hot path: one `in`, no call
    need = operation_need(target.operation)  # a resource: by its path's first segment
    if need is None:
        return deployment.api_version
    return _operation_version(deployment, need)


def honoured_client_version(target: Target, client_version: str | None, honour: bool) -> bool:
    """Whether a native client's own api-version is what a dated deployment is sent (then
    every dated member judges the request by it alike, whatever its own)."""
    return bool(
        honour and target.native and client_version and API_VERSION.match(client_version)
        and client_version not in ("v1", "preview", "latest")
        and not (target.kind == "resource" and v1_only(target.operation))
    )


def serves_operation(deployment: DeploymentSettings, target: Target) -> bool:
    """Whether `deployment`'s api-version (or the one the gateway would choose for it)
    serves `target`'s operation: False only for an explicit dated version too old for it,
    which `api_version_for` refuses. A native client's own version is not considered."""
    if deployment.api == "v1" or deployment.api_version_reason != "explicit":
        return True
    if target.kind == "deployment" and target.operation not in OPERATION_NEEDS:
        return True
    need = operation_need(target.operation)
    return need is None or need.accepted_by(parse_api_version(deployment.api_version))


def _operation_version(deployment: DeploymentSettings, need: OperationNeed) -> str:
    """The deployment's version, or a newer one the operation needs (apiversions'
    choice); an explicit version too old for it is refused, not sent to get a 404."""
    explicit = deployment.api_version_reason == "explicit"
    version = operation_version(deployment.api_version, explicit, need)
    if version is None:
        # An UnsupportedParameter: another pool member on a newer version takes it.
        raise UnsupportedParameter(
            need.refusal(deployment.api_version),
            code="unsupported_api_version")
    return version


# A serverless API endpoint (one model: NAME.REGION.models.ai.azure.com) serves the model
# inference API at its root (`POST {endpoint}/chat/completions`), an AI Services resource
# under `/models`.
_SERVERLESS_HOST = ".models.ai.azure.com"


def _models_prefix(endpoint: str) -> str:
    """The path the model inference API has on `endpoint`: `/models`, or none for an
    endpoint that already ends in it or a serverless one."""
    if endpoint.lower().endswith("/models") or _serverless(endpoint):
        return ""
    return "/models"


def _serverless(endpoint: str) -> bool:
    """Whether `endpoint`'s host is a serverless API's, written fully qualified
    (`NAME.REGION.models.ai.azure.com.`, DNS's root) or not."""
    host = urlsplit(endpoint.lower()).hostname or ""
    return host.rstrip(".").endswith(_SERVERLESS_HOST)


def key_header(deployment: DeploymentSettings, key: str) -> dict[str, str]:
    """The header an Azure key goes in: `api-key`, or `Authorization: Bearer` for a
    Foundry deployment on a serverless endpoint, which answers `api-key` alone with 400
    "Missing Authorization header" (semantic-kernel#8624, Open-WebUI-Functions#12; the
    model inference reference sends the key as a bearer token there)."""
    if deployment.api == "foundry" and _serverless(deployment.endpoint):
        return {"Authorization": f"Bearer {key}"}
    return {"api-key": key}


def upstream_url(
    deployment: DeploymentSettings,
    target: Target,
    api_version: str | None,
    client_query: Iterable[tuple[str, str]] = (),
) -> str:
    base = deployment.endpoint
    if deployment.api == "foundry":
        # routing.servable() lets only chat/completions and embeddings reach a Foundry
        # deployment; the operation is one of ours, not client text.
        path = f"{_models_prefix(base)}/{target.operation}"
    elif target.kind == "deployment" and deployment.api == "dated":
        path = f"/openai/deployments/{quote(deployment.deployment_name, safe='')}/{target.operation}"
    else:
        segments = "/".join(quote(part, safe="") for part in target.operation.split("/"))
        v1 = deployment.api == "v1" or v1_only(target.operation)
        path = f"/openai/v1/{segments}" if v1 else f"/openai/{segments}"
    query: list[tuple[str, str]] = []
    if api_version is not None:
        query.append(("api-version", api_version))
    if target.kind == "resource":
        query.extend((k, v) for k, v in client_query
                     if k in RESOURCE_QUERY_PARAMS or _METADATA_FILTER.match(k))
    return f"{base}{path}?{urlencode(query)}" if query else f"{base}{path}"


def names_deployment_in_body(deployment: DeploymentSettings, target: Target) -> bool:
    """Whether the upstream body's `model` must be the deployment's name: on the v1 API,
    Foundry's model inference API and resource calls (the dated API's deployment
    operations name it in the path instead)."""
    return deployment.api != "dated" or target.kind == "resource"


def azure_auth_headers(
    deployment: DeploymentSettings, caller: Caller, entra_token: str | None = None
) -> dict[str, str]:
    if deployment.auth == "key" and deployment.api_key is not None:
        return key_header(deployment, deployment.api_key.get_secret_value())
    if deployment.auth == "entra":
        if entra_token is None:
            raise AuthenticationFailed("No Entra ID token is available for this deployment.")
        return {"Authorization": f"Bearer {entra_token}"}
    if caller.passthrough_key is None:
        if caller.key is not None:  # it was a 401 "You didn't provide an API key"
            raise AzureKeyRequired(
                f"The deployment for model '{deployment.model_name}' takes the caller's own "
                "Azure OpenAI key (this gateway has none for it), and a virtual key is not "
                "an Azure key: ask the gateway's operator to give it an api_key or auth: "
                "entra.")
        raise AuthenticationFailed(
            "You didn't provide an API key. This gateway passes your key to Azure OpenAI: "
            "send it as 'Authorization: Bearer YOUR_AZURE_KEY'."
        )
    return key_header(deployment, caller.passthrough_key)


def forwarded_headers(client_headers: Mapping[str, str]) -> dict[str, str]:
    """The few client headers Azure needs. Never `Authorization`, cookies, or the
    client's `api-key` (the key is set by `azure_auth_headers`)."""
    headers = {"User-Agent": _USER_AGENT}
    for name in _FORWARDED_REQUEST_HEADERS:
        value = client_headers.get(name)
        if value is not None:
            headers[name] = value
    return headers


def relayed_response_headers(upstream_headers: Mapping[str, str],
                             limits: bool = True) -> dict[str, str]:
    """The headers of Azure's answer relayed to the client, under lower-case names.
    Without `limits` (a virtual key's answer, which carries its own: gateway/
    limitheaders.py), Azure's `x-ratelimit-*` are not among them: no later pass over the
    answer's names has to take them out."""
    relayed: dict[str, str] = {}
    decided = _RELAYED_AS.get if limits else _RELAYED_UNLIMITED.get
    for name, value in upstream_headers.items():
        lower = decided(name)
        if lower is None:
            lower = _relayed_as(name, limits)
        if lower:
            relayed[lower] = value
    return relayed


# Header name as Azure spelled it -> the name it is relayed under, or "" when it is not
# relayed: the same dozen names come on every answer, so each is judged once. Bounded
# (names are Azure's, but a misbehaving upstream could send endless new ones). The same
# without Azure's rate-limit headers, for a virtual key's answers.
_RELAYED_AS: BoundedCache[str, str] = BoundedCache(1024)
_RELAYED_UNLIMITED: BoundedCache[str, str] = BoundedCache(1024)


def _relayed_as(name: str, limits: bool) -> str:
    lower = name.lower()
    if lower.startswith("x-ratelimit-"):
        relayed = lower if limits else ""
    else:
        relayed = lower if lower in _RELAYED_EXACT else ""
    return (_RELAYED_AS if limits else _RELAYED_UNLIMITED).put(name, relayed)
