"""Which deployments may serve a request: the pool its model names (in the path or the
body), narrowed to the members that serve the operation, sent to the resource that
created the object it is about, or the home pool when no model says (for a virtual key
with an allow-list, the first pool it may use that holds objects).

The balancer then orders the pool's members (`gateway/balancer.py`); this module only
chooses the pool.
"""

from __future__ import annotations

from azure_openai_proxy.apiversions import OPERATION_NEEDS
from azure_openai_proxy.errors import GatewayError, MalformedBody
from azure_openai_proxy.gateway.affinity import ResourceAffinity, ids_referenced, item_references
from azure_openai_proxy.gateway.governed import pool_allowed
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.routing import Pool, RoutingTable, Target, servable
from azure_openai_proxy.settings import Settings
from azure_openai_proxy.translate import serves_operation

__all__ = ["NoPoolAllowed", "PoolChooser"]


class NoPoolAllowed(GatewayError):
    """A virtual key's request that names no model (an upload, a batch...), when the
    key may use no pool that holds objects."""

    status = 403
    type_ = "invalid_request_error"
    code = "no_deployment_allowed"


class PoolChooser:
    """The pool for each request, from one routing table and the objects' homes."""

    def __init__(self, settings: Settings, table: RoutingTable, affinity: ResourceAffinity) -> None:
        self.settings = settings
        self.table = table
        self.affinity = affinity

    def pool_for(self, target: Target, body: RequestBody,
                 allowed: tuple[str, ...] = ()) -> tuple[Pool, str | None]:
        """The pool and the model name the client sent (None: no model named). `allowed`:
        a virtual key's allow-list, which a request naming no model is kept within."""
        model = target.path_model if target.kind == "deployment" and target.path_model else None
        if model is None:
            model = body.model()
        if model is None:
            if target.kind == "deployment":
                raise MalformedBody("You must provide a model parameter.", param="model")
            pool = self._allowed_home_pool(allowed) if allowed else self._home_pool()
        else:
            pool = self.table.resolve(model)
            if pool.general is not pool.deployments:  # a Foundry member: not everything
                pool = servable(pool, target)
        # Chat: one `in`; a resource by its path's first segment (apiversions.operation_need).
        operation = target.operation
        if (operation in OPERATION_NEEDS or (target.kind == "resource" and operation.partition(
                "/")[0] in OPERATION_NEEDS)) and len(pool.deployments) > 1 and not target.native:
            pool = _serving_operation(pool, target)
        if target.kind == "resource":
            pool = self._sticky(pool, target, body)
        return pool, model

    def _sticky(self, pool: Pool, target: Target, body: RequestBody) -> Pool:
        """A request about an object (a file, a response...) goes to the resource that
        created it, when its home is known here (this worker saw it created, or learnt it
        from its owner's record) and that deployment is still configured: to the pool's
        member on that resource (the model the request names), else to that deployment."""
        json = body.json
        home = self.affinity.home_of(ids_referenced(target.operation, json)
                                     + item_references(json, strict=False))
        if home is None:
            return pool
        # The object lives on the resource (endpoint), not on one deployment: a pool
        # member there serves it as the model named (a chained turn on another model).
        on_resource = [d for d in pool.general if d.endpoint == home[0]]
        if on_resource and not any(d.deployment_name == home[1] for d in on_resource):
            return Pool(pool.model, (on_resource[0],), dynamic=pool.dynamic, transient=True)
        for deployment in (*pool.deployments, *self.settings.deployments):
            # A Foundry deployment may share its resource and name with the Azure
            # OpenAI one that made the object, but serves no objects.
            if (deployment.endpoint, deployment.deployment_name) == home and (
                    deployment.api != "foundry"):
                # Judged by the allow-list as what it is: a configured deployment found
                # here is judged by its model, not by the name the client sent.
                own = any(member is deployment for member in pool.deployments)
                return Pool(pool.model, (deployment,), dynamic=pool.dynamic and own,
                            transient=True)
        return pool

    def _allowed_home_pool(self, allowed: tuple[str, ...]) -> Pool:
        """Where a key with an allow-list keeps its files, batches...: the default
        endpoint when one of its names reaches it (env mode), else the first configured
        pool in config order that it may use and that holds objects (not Foundry's), else
        the default endpoint when a pattern may reach it (it serves any name not
        configured, judged by that name)."""
        default = self.settings.default_endpoint is not None
        if default and any(self._reaches_default_endpoint(name) for name in allowed):
            return self.table.resolve_home()
        for pool in self.table.pools:
            if pool.general and pool_allowed(allowed, pool.model, pool):
                return pool if pool.general is pool.deployments else Pool(
                    pool.model, pool.general, transient=True)
        if default and any(_is_pattern(name) for name in allowed):
            return self.table.resolve_home()
        raise NoPoolAllowed(
            "This key may use no deployment that can hold files, batches or other stored "
            "objects (its models are served by none, or only by Azure AI Foundry model "
            "deployments). Name a model it may use in the request, or use a key allowed a "
            "model served by Azure OpenAI.")

    def _reaches_default_endpoint(self, name: str) -> bool:
        """Whether an allow-list entry is a model name that the default endpoint serves
        (a pool made for it: env mode); a pattern is judged after the configured pools."""
        if _is_pattern(name):
            return False
        try:
            return self.table.resolve(name).dynamic
        except GatewayError:
            return False

    def _home_pool(self) -> Pool:
        """Where deployment-less calls (GET files/{id}, ...) go when no model says."""
        pools = self.table.pools
        if self.settings.default_endpoint is not None:
            return self.table.resolve_home()
        for pool in pools:  # a Foundry deployment has no files, batches...
            if pool.general:
                return pool if pool.general is pool.deployments else Pool(
                    pool.model, pool.general, transient=True)
        raise MalformedBody("No deployment is configured to serve this request.")


def _is_pattern(name: str) -> bool:
    """An allow-list entry that is a shell-style pattern (`gpt-4o*`), not a name."""
    return any(char in name for char in "*?[")


def _serving_operation(pool: Pool, target: Target) -> Pool:
    """`pool` without the members whose explicit api-version cannot serve the operation
    (a Responses call, vector stores...), when another member can: they would be refused
    by the gateway whichever the balancer tried first. When none can, the pool is kept and
    the request gets the refusal naming the version it needs (translate.api_version_for)."""
    members = tuple(d for d in pool.deployments if serves_operation(d, target))
    if not members or len(members) == len(pool.deployments):
        return pool
    return Pool(pool.model, members, dynamic=pool.dynamic, transient=True)
