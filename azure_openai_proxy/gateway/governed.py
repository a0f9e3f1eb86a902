"""What the request path applies for a virtual key, as plain functions: the allow-list
judged over a pool, a limiter's refusal as OpenAI's 429, the tokens a request is settled
with, the names its cost is priced by. `Gateway._governed` (gateway/pipeline.py) calls them.
"""

from __future__ import annotations

from azure_openai_proxy.errors import KeyRateLimited
from azure_openai_proxy.governance.keys import model_allowed
from azure_openai_proxy.governance.ratelimit import Refusal
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool

__all__ = ["limit_refusal", "pool_allowed", "price_names", "used_tokens"]


def pool_allowed(patterns: tuple[str, ...], name: str, pool: Pool) -> bool:
    """Whether a key's allow-list lets `name` through. A pool found by a deployment's
    name (Azure's native paths, or a deployment name sent as `model`) is judged by the
    model each of its deployments serves, never by the deployment's name."""
    models = {deployment.model_name for deployment in pool.deployments}
    if pool.dynamic or models == {pool.model}:
        return model_allowed(patterns, name, pool.model)
    return all(model_allowed(patterns, model) for model in models)


def limit_refusal(refusal: Refusal) -> KeyRateLimited:
    whose = "team" if refusal.subject.startswith("team:") else "key"
    if refusal.kind == "parallel":
        what = f"Too many requests in flight for this {whose}"
    elif refusal.never:
        what = f"This request alone is larger than this {whose}'s tokens per minute"
    else:
        what = f"Rate limit reached for this {whose} ({refusal.kind} per minute)"
    retry_ms = max(1, round(refusal.retry_after * 1000))
    headers = refusal.headers
    if refusal.never:  # waiting will not help: the SDKs do not retry on this header
        return KeyRateLimited(f"{what}: lower max_tokens or the prompt.",
                              retry_after_ms=retry_ms,
                              limit_headers={**headers, "x-should-retry": "false"})
    return KeyRateLimited(f"{what}. Please try again in {retry_ms} ms.",
                          retry_after_ms=retry_ms, limit_headers=headers)


def used_tokens(record: RequestRecord) -> int | None:
    """Tokens Azure said the request used (None: it did not say)."""
    prompt, completion = record.tokens()
    if prompt is None and completion is None:
        return None
    return (prompt or 0) + (completion or 0)


def price_names(pool: Pool, client_model: str | None) -> tuple[str | None, ...]:
    """The names a request to `pool` is priced by, as the ledger will (its first
    deployment's: the one the balancer most likely picks)."""
    first = pool.deployments[0] if pool.deployments else None
    if first is None:
        return (client_model, pool.model)
    return (client_model, first.model_name, first.deployment_name)
