"""One client request made into the request for one deployment: the URL and api-version
(`translate.py`), Azure's auth headers, the body adapted to what the deployment accepts
(`compat.py`) with its `model` renamed where the API wants the deployment's name, and
the stream policy the relay will apply.

The decisions are the pure modules'; this one sequences them and remembers the URLs and
deployment profiles that nearly every request repeats.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

import orjson

from azure_openai_proxy.apiversions import deployment_need
from azure_openai_proxy.auth import Caller
from azure_openai_proxy.boundedcache import BoundedCache
from azure_openai_proxy.compat import (
    DeploymentProfile,
    adapt_chat_request,
    adapt_completions_request,
    infer_family,
)
from azure_openai_proxy.errors import HostileInput, MalformedBody
from azure_openai_proxy.gateway.foundrybody import EXTRA_PARAMETERS_HEADER, fit_foundry_body
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.governance.toolusage import (
    IMAGE_DEPLOYMENT_HEADER,
    image_tool,
    valid_deployment_name,
)
from azure_openai_proxy.http.interface import HttpRequest
from azure_openai_proxy.normalize.stream import StreamPolicy
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Target
from azure_openai_proxy.settings import FOUNDRY_API_VERSION, DeploymentSettings, Settings
from azure_openai_proxy.translate import (
    api_version_for,
    azure_auth_headers,
    forwarded_headers,
    honoured_client_version,
    key_header,
    names_deployment_in_body,
    upstream_url,
)
from azure_openai_proxy.upstream.transport import UpstreamRequest

__all__ = ["RequestTranslator"]

log = logging.getLogger("azure_openai_proxy")

_CACHE_LIMIT = 4096  # entries in the URL and profile caches
_NORMALIZED_STREAMS = frozenset({"chat/completions", "completions"})


class _Route(NamedTuple):
    """What a request for one deployment and target gets whatever its body."""

    deployment: DeploymentSettings
    target: Target
    url: str
    profile: DeploymentProfile | None  # chat and completions: what the deployment accepts
    needs_model: bool  # the body's `model` must be the deployment's name
    key_headers: dict[str, str] | None  # an `api-key` deployment's; None: per request
    foundry: bool  # Azure AI model inference: the body fitted to its schema (foundrybody)

    def __repr__(self) -> str:
        # Never the key: a route may be shown by a debugger or a traceback's locals.
        return (f"_Route({self.deployment.deployment_name!r}, {self.target.operation!r}, "
                f"{self.url!r}, key_headers={'...' if self.key_headers else None})")


class RequestTranslator:
    """Builds upstream requests for one worker's settings, remembering URLs and profiles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._urls: BoundedCache[tuple[str, str, str, str, str | None], str] = BoundedCache(
            _CACHE_LIMIT
        )
        self._profiles: BoundedCache[
            tuple[int, str | None], tuple[DeploymentSettings, DeploymentProfile]
        ] = BoundedCache(_CACHE_LIMIT)
        # By the deployment's id (checked against the object kept) and the operation: not
        # the target's, which differs for every `/v1/deployments/{name}/...` a client
        # invents, and is made again whenever the path cache is cleared.
        self._routes: BoundedCache[tuple[int, str], _Route] = BoundedCache(_CACHE_LIMIT)
        self._policies: BoundedCache[tuple[str | None, bool], StreamPolicy] = BoundedCache(
            _CACHE_LIMIT)
        # Read once: a settings model's attributes cost a __getattr__ hook per access.
        self._client_model = settings.response_model == "client"
        self._keep_azure_fields = settings.keep_azure_fields

    def translate(
        self, request: HttpRequest, target: Target, caller: Caller, body: RequestBody,
        deployment: DeploymentSettings, client_model: str | None, record: RequestRecord,
        token: str | None = None,
    ) -> tuple[UpstreamRequest, StreamPolicy | None]:
        """The request for `deployment`, and the stream policy when it is a normalized
        stream (None otherwise). Notes adaptations and streaming in `record`."""
        route = self._routes.get((id(deployment), target.operation)) if (
            target.kind == "deployment" and not target.native) else None
        if route is None or route.deployment is not deployment:
            route = self._route(request, target, deployment)
        headers = forwarded_headers(request.headers)
        if route.key_headers is not None:
            headers.update(route.key_headers)
        else:
            headers.update(azure_auth_headers(deployment, caller, token))
        policy: StreamPolicy | None = None
        payload: bytes | Any = None
        if body.json is not None:
            data = body.json
            changed = False
            if route.profile is not None:  # chat or completions: adapted, maybe streamed
                adapt = adapt_chat_request if target.operation == "chat/completions" else (
                    adapt_completions_request
                )
                adapted = adapt(data, route.profile)
                if adapted.changed:
                    data, changed = adapted.body, True
                    record.adaptations = adapted.notes
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("adapted request for %s: %s", deployment.deployment_name,
                                  ", ".join(adapted.notes))
                if data.get("stream") is True:
                    record.stream = True
                    policy = self._policy(client_model, adapted.usage_injected)
            elif target.operation == "responses":
                image_deployment = request.headers.get(IMAGE_DEPLOYMENT_HEADER)
                if image_deployment is not None and image_tool(data) is not None:
                    # the hosted image tool's deployment; without the tool Azure has no
                    # use for it: not relayed, whatever it says (`_image_deployment`)
                    headers[IMAGE_DEPLOYMENT_HEADER] = _image_deployment(image_deployment)
            if route.foundry:
                data, changed = _fit_foundry(request, target, data, changed, headers, record)
            if (route.needs_model and client_model is not None
                    and data.get("model") != deployment.deployment_name):
                data = {**data, "model": deployment.deployment_name}
                changed = True
            if changed or body.canonical:  # orjson's own call: no frame of ours
                try:
                    payload = orjson.dumps(data)
                except orjson.JSONEncodeError:
                    raise _too_deep() from None
            else:
                payload = body.raw
            headers["content-type"] = "application/json"
        elif body.spool is not None and body.boundary is not None:
            replace = None
            if route.needs_model and client_model is not None:
                field = body.spool.form_field("model", body.boundary)
                if field is not None and field[0] != deployment.deployment_name:
                    replace = (field[1], field[2], deployment.deployment_name.encode())
            payload = body.spool.replaying(replace)
            headers["content-length"] = str(body.spool.length(replace))
        elif body.raw:
            payload = body.raw
        # The record is told when the transport sends it (`record.sent`).
        return UpstreamRequest(request.method, route.url, headers, payload, record), policy

    def client_version_sent(self, request: HttpRequest, target: Target) -> bool:
        """Whether dated deployments are sent the native client's own api-version for
        this request (not their own): read again only when a member refused it."""
        return target.native and honoured_client_version(
            target, _query_value(request, "api-version"),
            self.settings.honour_client_api_version)

    def _route(self, request: HttpRequest, target: Target,
               deployment: DeploymentSettings) -> _Route:
        """What `translate` decides from the deployment and the target alone; remembered
        for a deployment operation on an OpenAI-style path (no client api-version, no
        client query), where it is the same for every request."""
        client_version = _query_value(request, "api-version") if target.native else None
        version = api_version_for(
            deployment, target, client_version, self.settings.honour_client_api_version
        )
        key = deployment.api_key
        route = _Route(
            deployment, target, self._url(deployment, target, version, request),
            self._profile(deployment, version) if target.operation in _NORMALIZED_STREAMS
            else None,
            names_deployment_in_body(deployment, target),
            key_header(deployment, key.get_secret_value())
            if deployment.auth == "key" and key is not None else None,
            deployment.api == "foundry",
        )
        if target.kind == "deployment" and not target.native:
            self._routes.put((id(deployment), target.operation), route)
        return route

    def _policy(self, client_model: str | None, usage_injected: bool) -> StreamPolicy:
        """A stream's policy (frozen), one per client model name and usage choice."""
        key = (client_model, usage_injected)
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies.put(key, StreamPolicy(
                client_model=client_model if self._client_model else None,
                keep_azure_fields=self._keep_azure_fields,
                strip_usage_frame=usage_injected,
            ))
        return policy

    def _url(
        self, deployment: DeploymentSettings, target: Target, version: str | None,
        request: HttpRequest,
    ) -> str:
        """The upstream URL; cached for deployment operations (they carry no client query,
        so it is not even parsed for them)."""
        if target.kind != "deployment":
            return upstream_url(deployment, target, version, _query(request))
        key = (deployment.endpoint, deployment.deployment_name, deployment.api, target.operation,
               version)
        url = self._urls.get(key)
        if url is None:
            url = self._urls.put(key, upstream_url(deployment, target, version))
        return url

    def _profile(self, deployment: DeploymentSettings, version: str | None) -> DeploymentProfile:
        """`_profile`, remembered per deployment object and api-version."""
        key = (id(deployment), version)
        known = self._profiles.get(key)
        if known is not None and known[0] is deployment:  # the id was not reused
            return known[1]
        profile = _profile(deployment, version)
        self._profiles.put(key, (deployment, profile))
        return profile


def _profile(deployment: DeploymentSettings, version: str | None) -> DeploymentProfile:
    """What the deployment accepts, judged by the api-version actually sent (a native
    client's own version may differ from the configured one)."""
    # Foundry's model inference API gates parameters by api-version as the dated API
    # does (it answers OpenAI models with Azure OpenAI's "enabled only for api versions"
    # errors): its version is judged on the same table.
    api: Literal["dated", "v1"] = "v1" if deployment.api == "v1" else "dated"
    return _cached_profile(
        api, version if api == "dated" else deployment.api_version,
        deployment.model_family, deployment.deployment_name, deployment.model_name,
        tuple(deployment.unsupported_params),
        deployment.api == "foundry" and version == FOUNDRY_API_VERSION,
    )


@functools.lru_cache(maxsize=1024)  # bounded: dynamic deployment names come from clients
def _cached_profile(
    api: Literal["dated", "v1"], version: str | None,
    family: Literal["auto", "reasoning", "standard"], deployment_name: str,
    model_name: str, unsupported: tuple[str, ...], model_inference: bool,
) -> DeploymentProfile:
    return DeploymentProfile(
        api=api,
        api_version=version,
        family=infer_family(deployment_name, model_name) if family == "auto" else family,
        unsupported_params=frozenset(unsupported),
        need=deployment_need(deployment_name, model_name, family),
        model_inference=model_inference,
    )


def _fit_foundry(
    request: HttpRequest, target: Target, data: dict[str, Any], changed: bool,
    headers: dict[str, str], record: RequestRecord,
) -> tuple[dict[str, Any], bool]:
    """A Foundry deployment's body without what its API refuses (foundrybody.py); the
    client's own `extra-parameters` header relayed."""
    option = request.headers.get(EXTRA_PARAMETERS_HEADER)
    fitted, notes = fit_foundry_body(data, target.operation, option)
    if option is not None:
        headers[EXTRA_PARAMETERS_HEADER] = option
    if not notes:
        return data, changed
    record.adaptations = tuple(dict.fromkeys((*record.adaptations, *notes)))  # once a try
    return fitted, True


def _too_deep() -> MalformedBody:
    """A body re-encoded (adapted, or checked and sent as parsed: `RequestBody.canonical`)
    that orjson cannot write: it writes at most 254 levels of nesting while it reads
    1,024, so a body between the two is the client's error, not ours."""
    return MalformedBody(
        "The JSON body of your request is nested too deeply (at most 254 levels).")


def _query(request: HttpRequest) -> list[tuple[str, str]]:
    """The client's query parameters, in order (only resource calls forward any)."""
    return parse_qsl(request.query_string, keep_blank_values=True)


def _query_value(request: HttpRequest, name: str) -> str | None:
    for key, value in _query(request):
        if key == name:
            return value
    return None


def _image_deployment(name: str) -> str:
    """The client's `x-ms-oai-image-generation-deployment` (which deployment runs a
    Responses request's hosted image tool), relayed only when it can be a deployment's
    name: client text goes into no upstream header unchecked. Read only when the body
    asks for the tool: a client may send the header on every request (Microsoft's
    examples set it as a client's default header), and Azure reads it only to run the
    tool, so a request without it is relayed without the header, never refused for it;
    and the allow-list and the budget's hold, which judge it only beside the tool, see
    every header Azure gets."""
    if not valid_deployment_name(name):
        raise HostileInput(
            f"The {IMAGE_DEPLOYMENT_HEADER} header must be a deployment name (1 to 64 "
            "letters, digits, '-', '_' or '.').", param=IMAGE_DEPLOYMENT_HEADER)
    return name
