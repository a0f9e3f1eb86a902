"""Faults queued over the admin endpoint for the next matching requests. Pure.

A fault matches a request by deployment name (`*` matches every data-plane request)
and is consumed one count per matching request, oldest fault first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

# `empty_usage` / `null_usage`: an answer's `usage` (a JSON answer's, a stream's) as `{}`
# / its counts null (no source says Azure sends either; a gateway must not take them as
# free): never a default.
FAULT_KINDS = ("429", "500", "503", "hang", "drop", "cut", "empty_usage", "null_usage")


@dataclass(frozen=True)
class Fault:
    """One queued fault; `count` is how many more requests it will hit."""

    id: str
    deployment: str
    kind: str
    count: int = 1
    seconds: float = 30.0
    after_frames: int = 2
    retry_after: float = 1.0

    def matches(self, deployment: str | None) -> bool:
        return self.deployment == "*" or (deployment is not None and self.deployment == deployment)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_fault(fault_id: str, body: object) -> Fault:
    """Validate an admin request body into a `Fault`; `ValueError` names the bad field."""
    if not isinstance(body, Mapping):
        raise ValueError("body: must be a JSON object")
    deployment = body.get("deployment")
    if not isinstance(deployment, str) or not deployment:
        raise ValueError("deployment: required, a deployment name or '*'")
    kind = str(body.get("fault", ""))
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault: must be one of {', '.join(FAULT_KINDS)}")
    unknown = sorted(
        set(body) - {"deployment", "fault", "count", "seconds", "after_frames", "retry_after"}
    )
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    return Fault(
        id=fault_id,
        deployment=deployment,
        kind=kind,
        count=int(_number(body, "count", 1, minimum=1)),
        seconds=float(_number(body, "seconds", 30.0)),
        after_frames=int(_number(body, "after_frames", 2)),
        retry_after=float(_number(body, "retry_after", 1.0)),
    )


def _number(body: Mapping[str, Any], key: str, default: float, minimum: float = 0) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{key}: must be a number >= {minimum:g}")
    return float(value)


class FaultBook:
    """The queue of pending faults."""

    def __init__(self) -> None:
        self._pending: list[Fault] = []
        self._serial = 0

    def add(self, body: object) -> Fault:
        self._serial += 1
        fault = parse_fault(f"fault-{self._serial}", body)
        self._pending.append(fault)
        return fault

    def take(self, deployment: str | None) -> Fault | None:
        """The fault for this request, if any, spending one of its counts."""
        for position, fault in enumerate(self._pending):
            if fault.matches(deployment):
                if fault.count <= 1:
                    del self._pending[position]
                else:
                    self._pending[position] = replace(fault, count=fault.count - 1)
                return fault
        return None

    def pending(self) -> list[Fault]:
        return list(self._pending)

    def clear(self) -> None:
        self._pending.clear()
