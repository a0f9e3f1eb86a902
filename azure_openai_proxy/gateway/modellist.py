"""The model list and a model's entry (`GET /v1/models[/{model}]`), which the gateway
answers itself: every configured model name, or those a virtual key's allow-list lets
through (gateway/governed.py `pool_allowed` judges a pool as the request path does)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import ModelNotAllowed, ModelNotFound
from azure_openai_proxy.gateway.governed import pool_allowed
from azure_openai_proxy.governance.keys import allowed_names
from azure_openai_proxy.http.interface import Answer
from azure_openai_proxy.routing import RoutingTable, Target

__all__ = ["models_answer"]

_CREATED = 1_700_000_000


def models_answer(table: RoutingTable, target: Target, caller: Caller) -> Answer:
    """The answer to `target` (kind `models` or `model`) for `caller`."""
    allowed = caller.key.models if caller.key is not None else ()
    if target.kind == "model":
        assert target.path_model is not None
        try:
            pool = table.resolve(target.path_model)
        except ModelNotFound:
            if allowed:  # without the list of every configured model
                raise ModelNotAllowed(target.path_model) from None
            raise
        if allowed and not pool_allowed(allowed, target.path_model, pool):
            raise ModelNotAllowed(target.path_model)
        return _json_answer({"id": pool.model, "object": "model", "created": _CREATED,
                             "owned_by": "azure-openai"})
    names = table.model_names
    if allowed:
        names = tuple(allowed_names(allowed, names))
    data = [
        {"id": name, "object": "model", "created": _CREATED, "owned_by": "azure-openai"}
        for name in names
    ]
    return _json_answer({"object": "list", "data": data})


def _json_answer(data: Mapping[str, Any], status: int = 200) -> Answer:
    return Answer(status, {"content-type": "application/json"}, orjson.dumps(data))
