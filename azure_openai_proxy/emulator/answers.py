"""What the emulator's two HTTP families (Azure OpenAI's `/openai/...` and Foundry's
`/models/...`) answer alike: Azure's error body and the rate-limit headers of a verdict."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

from azure_openai_proxy.emulator import wire_errors
from azure_openai_proxy.emulator.ratelimit import Verdict

__all__ = ["error_response", "limit_headers"]


def limit_headers(verdict: Verdict) -> dict[str, str]:
    return {
        "x-ratelimit-limit-requests": str(verdict.limit_requests),
        "x-ratelimit-limit-tokens": str(verdict.limit_tokens),
        "x-ratelimit-remaining-requests": str(verdict.remaining_requests),
        "x-ratelimit-remaining-tokens": str(verdict.remaining_tokens),
    }


def error_response(error: wire_errors.AzureError, headers: Mapping[str, str]) -> web.Response:
    return web.Response(
        body=orjson.dumps(error.body), status=error.status,
        headers={**headers, **error.headers}, content_type="application/json",
    )
