"""One structured line per request: no prompts, no keys.

The line is a JSON object built only when the logger is enabled for INFO, so a gateway
run at `warning` pays nothing for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["RECORD", "RequestRecord", "access_logger", "configure_logging"]

access_logger = logging.getLogger("azure_openai_proxy.access")
log = logging.getLogger("azure_openai_proxy")


@dataclass(slots=True)
class RequestRecord:
    """What the log line (and the metrics) say about one request; filled in as it goes."""

    request_id: str
    method: str
    route: str = "-"
    model: str | None = None
    deployment: str | None = None
    endpoint: str | None = None  # the deployment's endpoint (metrics label; not logged)
    status: int = 0
    attempts: int = 0
    upstream_ms: float | None = None
    total_ms: float = 0.0
    azure_request_id: str | None = None
    usage: dict[str, Any] | None = None
    stream: bool = False
    adaptations: tuple[str, ...] = ()
    error: str | None = None
    retries: list[str] = field(default_factory=list)

    def emit(self) -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "model": self.model,
            "deployment": self.deployment,
            "status": self.status,
            "attempts": self.attempts,
            "upstream_ms": None if self.upstream_ms is None else round(self.upstream_ms, 2),
            "total_ms": round(self.total_ms, 2),
            "stream": self.stream,
        }
        if self.azure_request_id:
            line["azure_request_id"] = self.azure_request_id
        if self.usage:
            line["usage"] = {
                k: self.usage.get(k)
                for k in ("prompt_tokens", "completion_tokens", "total_tokens",
                          "input_tokens", "output_tokens")
                if k in self.usage
            }
        if self.adaptations:
            line["adapted"] = list(self.adaptations)
        if self.retries:
            line["retries"] = self.retries
        if self.error:
            line["error"] = self.error
        access_logger.info(orjson.dumps(line).decode())


# Where a request's record is kept on the aiohttp request (typed key where aiohttp has one).
RECORD: Any = (
    web.RequestKey("record", RequestRecord) if hasattr(web, "RequestKey") else "record"
)


def configure_logging(level: str) -> None:
    """Plain lines to stderr; the access lines are JSON objects already."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("azure_openai_proxy")
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    root.propagate = False
