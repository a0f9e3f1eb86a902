"""The fine-tuned models and checkpoints a fine-tuning job's answers name, which belong
to the key that owns the job.

A checkpoint's id (`ft:gpt-4o-mini-2024-07-18:org:name:ckpt-step-100`) and the job's
fine-tuned model (`ft:...:name:abc123`) are not in any answer to the POST that created
the job: they appear later, in the job read back (`GET fine_tuning/jobs/{id}`: its
`fine_tuned_model`), in its checkpoints listed (`GET fine_tuning/jobs/{id}/checkpoints`:
each `fine_tuned_model_checkpoint`) and in the job list. `ObjectOwners` (gateway/
ownership.py) records them as the key's when the key owns the job, so
`fine_tuning/checkpoints/{id}/permissions` is then refused to every other restricted key
(and, as any object of unknown owner, to a restricted key before its owner read it).
Pure: parsed answers in, ids out.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["job_of", "listed_models", "named_models"]


def job_of(method: str, operation: str) -> str | None:
    """The fine-tuning job whose answer `method operation` is (a job read, its
    checkpoints listed), or None."""
    if method != "GET" or not operation.startswith("fine_tuning/jobs/"):
        return None
    parts = operation.split("/")
    if len(parts) == 3 or (len(parts) == 4 and parts[3] == "checkpoints"):
        return parts[2]
    return None


def named_models(raw: bytes) -> list[str]:
    """The fine-tuned model and checkpoint ids a job or checkpoint-list answer names."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(answer, dict):
        return []
    data = answer.get("data")
    items = data if isinstance(data, list) else [answer]
    return [model for item in items for model in _models(item)]


def listed_models(jobs: list[Any]) -> list[str]:
    """The fine-tuned models of a job list's (already filtered) jobs."""
    return [model for job in jobs for model in _models(job)]


def _models(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return []
    return [value for name in ("fine_tuned_model", "fine_tuned_model_checkpoint")
            if isinstance(value := item.get(name), str) and value]
