"""Which deployments may serve a request: the pool its model names (in the path or the
body), narrowed to the members that serve the operation, sent to the resource that
created the object it is about, or the home pool when no model says.

The balancer then orders the pool's members (`gateway/balancer.py`); this module only
chooses the pool.
"""

from __future__ import annotations

from azure_openai_proxy.errors import MalformedBody
from azure_openai_proxy.gateway.affinity import ResourceAffinity, ids_referenced
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.routing import Pool, RoutingTable, Target, servable
from azure_openai_proxy.settings import Settings

__all__ = ["PoolChooser"]


class PoolChooser:
    """The pool for each request, from one routing table and the objects' homes."""

    def __init__(self, settings: Settings, table: RoutingTable, affinity: ResourceAffinity) -> None:
        self.settings = settings
        self.table = table
        self.affinity = affinity

    def pool_for(self, target: Target, body: RequestBody) -> tuple[Pool, str | None]:
        """The pool and the model name the client sent (None: no model named)."""
        model = target.path_model if target.kind == "deployment" and target.path_model else None
        if model is None:
            model = body.model()
        if model is None:
            if target.kind == "deployment":
                raise MalformedBody("You must provide a model parameter.", param="model")
            pool = self._home_pool()
        else:
            pool = self.table.resolve(model)
            if pool.general is not pool.deployments:  # a Foundry member: not everything
                pool = servable(pool, target)
        if target.kind == "resource":
            pool = self._sticky(pool, target, body)
        return pool, model

    def _sticky(self, pool: Pool, target: Target, body: RequestBody) -> Pool:
        """A request about an object (a file, a response...) goes to the resource that
        created it, when this worker saw it created and that deployment is still known."""
        home = self.affinity.home_of(ids_referenced(target.operation, body.json))
        if home is None:
            return pool
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
