"""The emulator's own admin endpoint under `/_emulator` (no auth; never on the gateway).

    POST   /_emulator/faults      queue a fault       -> {"id": ..., "fault": {...}}
    GET    /_emulator/faults      pending faults      -> {"data": [...]}
    DELETE /_emulator/faults      clear them
    GET    /_emulator/requests    the request log     -> {"data": [...]}
    DELETE /_emulator/requests    clear it
    POST   /_emulator/reset       faults, log and rate-limit windows
    GET    /_emulator/images/{id}.png   images answered with `response_format: url`
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.emulator.exchange import EmulatorState


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _encodable(entry: Any) -> Any:
    """A request log entry as JSON can hold it: one whose parsed body (`json`) is nested
    deeper than orjson writes (254 levels) keeps its other fields (the raw `body` text
    among them), its `json` said to be too deep."""
    try:
        orjson.dumps({"data": [entry]})  # at the depth the log's answer puts it
    except TypeError:  # orjson: JSONEncodeError, or a plain TypeError past 254 levels
        if isinstance(entry, dict):
            return {**entry, "json": "<nested too deep to show>"}
        return "<nested too deep to show>"
    return entry


def add_routes(app: web.Application, key: web.AppKey[EmulatorState]) -> None:
    def state(request: web.Request) -> EmulatorState:
        return request.app[key]

    async def add_fault(request: web.Request) -> web.Response:
        try:
            fault = state(request).faults.add(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return _json({"error": "body: not valid JSON"}, 400)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"id": fault.id, "fault": fault.as_json()})

    async def list_faults(request: web.Request) -> web.Response:
        return _json({"data": [f.as_json() for f in state(request).faults.pending()]})

    async def clear_faults(request: web.Request) -> web.Response:
        state(request).faults.clear()
        return _json({"cleared": True})

    async def list_requests(request: web.Request) -> web.Response:
        entries = state(request).log.entries()
        try:
            return _json({"data": entries})
        except TypeError:  # a body nested deeper than orjson writes (not a JSONEncodeError)
            return _json({"data": [_encodable(entry) for entry in entries]})

    async def clear_requests(request: web.Request) -> web.Response:
        state(request).log.clear()
        return _json({"cleared": True})

    async def reset(request: web.Request) -> web.Response:
        current = state(request)
        current.faults.clear()
        current.log.clear()
        current.limiter.reset()
        return _json({"reset": True})

    async def image(request: web.Request) -> web.Response:
        data = state(request).images.get(request.match_info["image_id"])
        if data is None:
            return _json({"error": "image not found"}, 404)
        return web.Response(body=data, content_type="image/png")

    app.router.add_post("/_emulator/faults", add_fault)
    app.router.add_get("/_emulator/faults", list_faults)
    app.router.add_delete("/_emulator/faults", clear_faults)
    app.router.add_get("/_emulator/requests", list_requests)
    app.router.add_delete("/_emulator/requests", clear_requests)
    app.router.add_post("/_emulator/reset", reset)
    app.router.add_get("/_emulator/images/{image_id}.png", image)
