"""A virtual key's resource POST against its rules: work Azure bills outside any answer
the gateway meters (a batch, a fine-tuning job...: gateway/budgethold.py
`unmetered_work`) is refused to a key with a budget, and a key with an allow-list may
make a batch only from a file whose every line names a model it may use.

The models a file's lines name are read when a virtual key uploads it with purpose
`batch` (`uploaded_batch_models`) and kept with its owner (gateway/ownership.py);
`check_resource_post` judges `POST /batches` by them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import ModelNotAllowed
from azure_openai_proxy.gateway.affinity import folded
from azure_openai_proxy.gateway.budgethold import refuse_unmetered, values_of
from azure_openai_proxy.gateway.governed import deployment_allowed, values_named
from azure_openai_proxy.gateway.ownership import BatchNotAllowed, ObjectOwners
from azure_openai_proxy.gateway.spool import SpooledBody
from azure_openai_proxy.governance.keys import release_allowed
from azure_openai_proxy.routing import Pool, RoutingTable

__all__ = ["MAX_BATCH_LINES", "MAX_BATCH_LINE_BYTES", "batch_file_models", "check_resource_post",
           "uploaded_batch_models"]

# Azure takes at most 100,000 requests in one batch file.
MAX_BATCH_LINES = 100_000


async def check_resource_post(owners: ObjectOwners, table: RoutingTable, caller: Caller,
                              body: Mapping[str, Any] | None, operation: str,
                              pool: Pool) -> None:
    """A virtual key's POST to the resource `operation` (sent to `pool`): unmetered work
    refused to a key with a budget (`refuse_unmetered`: 403 `not_metered`), and a batch
    from a key with an allow-list only from a file whose every line names a model it may
    use (recorded when the file was uploaded through the gateway; a job's `model` is
    judged as any body's). A line's `model` is the name of the deployment Azure runs it
    on (the file goes to Azure as it is): judged by the model the pool's resources'
    deployment of that name serves (`deployment_allowed`), never as a client model name
    spelled the same (it let a key allowed `gpt-4o` run a line on another model's
    deployment named `gpt-4o`). `pool` is where the batch is sent: the resource holding
    its input file when known (recorded with its owner, or seen made by this worker:
    gateway/poolchoice.py), else every resource it may go to, each judged. The model a
    grader runs on (a grader run's, a reinforcement fine-tuning job's: `_GRADED`) is
    judged by its name (`release_allowed`): Azure reads it as a base model, not a
    deployment."""
    refuse_unmetered(caller, operation, body)
    key = caller.key
    assert key is not None
    if not key.models:
        return
    if operation in _GRADED and body is not None:
        for model in values_named(_graders(body, operation), "model"):
            if not release_allowed(key.models, model):
                raise ModelNotAllowed(model, "grader")
    if operation != "batches":
        return
    file_id = body.get("input_file_id") if body is not None else None
    # (not read in time: a retryable 503, not a refusal of a file that may be the key's)
    owned = await owners.owner(file_id) if isinstance(file_id, str) else None
    if owned is None or owned.models is None:
        raise BatchNotAllowed(
            "This key may only make batches from files uploaded through the gateway "
            "with purpose `batch` whose every line names a model.")
    for model in sorted(owned.models):
        if not deployment_allowed(key.models, table, pool, model):
            raise ModelNotAllowed(model)


# Where a POST names the graders it runs on a model Azure bills (a grader run's `grader`;
# a reinforcement fine-tuning job's `method.reinforcement.grader`), each judged by a
# key's allow-list as the model it names: Azure runs a grader on a base model by its name
# and release (`o3-mini-2025-01-31`; "model graders don't require model deployments",
# Azure's reinforcement fine-tuning guide), never on a deployment, so a deployment's
# name would only mislead. Validating a grader runs none.
_GRADED = frozenset({"fine_tuning/alpha/graders/run", "fine_tuning/jobs"})


def _graders(body: Mapping[str, Any], operation: str) -> list[Any]:
    """The graders a POST to `operation` (in `_GRADED`) runs: a grader run's `grader`, a
    fine-tuning job's method's (`method.reinforcement.grader`), each name in any letters
    (a case-insensitive binder reads `Grader` as `grader`, as it does `Model`). Only
    these: the rest of a method (a response format's JSON schema) may name a `model`
    that is no grader's."""
    if operation == "fine_tuning/alpha/graders/run":
        return values_of(body, "grader")
    return [grader for method in values_of(body, "method") if isinstance(method, dict)
            for settings in method.values() for grader in values_of(settings, "grader")]


# A `purpose` field is a word ("batch", "fine-tune", ...): a longer one is not read.
_MOST_PURPOSE_BYTES = 256


async def uploaded_batch_models(spool: SpooledBody | None,
                                boundary: bytes | None) -> frozenset[str] | None:
    """For an upload with purpose `batch`, the models its lines name. Read in a worker
    thread (a 60 MB file takes a third of a second to parse), so call it only for a key
    with an allow-list, once its limits have admitted the request."""
    if spool is None or boundary is None:
        return None
    try:
        return await asyncio.to_thread(_uploaded_models, spool, boundary)
    except (OSError, ValueError):  # the spool closed under the thread: the client left
        return None


def _uploaded_models(spool: SpooledBody, boundary: bytes) -> frozenset[str] | None:
    """The models of an upload's `file` when its `purpose` is `batch`, from the one
    reading of the form (`SpooledBody.parts`, gateway/formparts.py: what the upstream
    reads); None when either is given twice (in any letters: which one Azure takes
    cannot be known here), or not at all."""
    purpose = file = None
    for part in spool.parts(boundary):
        name = folded(part.name)  # as a case-insensitive binder reads it
        if name == "file" and part.is_file:
            if file is not None:
                return None
            file = part
        elif name == "purpose" and not part.is_file:
            if purpose is not None:
                return None
            purpose = part
    if purpose is None or file is None or purpose.end - purpose.start > _MOST_PURPOSE_BYTES:
        return None  # a purpose this long is no `batch`: not read, its models unknown
    if spool.text(purpose) != "batch":
        return None
    return batch_file_models(spool.read_at(file.start, file.end))


# A line past this is not judged (the file's models unknown): parsed whole, a line of
# small objects costs ~30 times its size in memory, and the parser holds the GIL for all
# of it, in the upload's thread or not. A chat request this large is rare in a batch
# (its pictures would go as URLs or files).
MAX_BATCH_LINE_BYTES = 16 * 1024 * 1024
# Nor is a line of more values than this (counted from its bytes, past a mebibyte: its
# commas and openings, an upper bound): a million values parse to ~50 MB of objects,
# where a 16 MiB line of `[],` made ~530 MB.
MAX_BATCH_LINE_VALUES = 1_000_000
_COUNTED_FROM = 1024 * 1024
# What bytes.splitlines breaks a line at (a lone CR too), found one at a time: the file's
# lines are never all made at once (a 60 MB file of short lines would be a million
# objects before the first was judged).
_LINE = re.compile(rb"[^\r\n]+")
# An escape that spells a letter of `body` or `model` (b c d e f... 0x62-0x65, 0x6c,
# 0x6d, 0x6f, 0x79; a few more than needed): without one, those names can only be
# written as themselves.
_NAME_ESCAPE = re.compile(rb"\\u00(?:6[2-5cdfCDF]|79)")


def batch_file_models(content: bytes) -> frozenset[str] | None:
    """The models the lines of a batch file name (`body.model`); None when a line cannot
    be read (then a batch from it cannot be checked: also one naming `Body` or `Model`
    in other letters, or `body` or a body's `model` twice), or past Azure's own bounds on
    a batch file (`MAX_BATCH_LINES` requests) or ours on a line
    (`MAX_BATCH_LINE_BYTES`)."""
    models: set[str] = set()
    lines = 0
    for match in _LINE.finditer(content):
        if match.end() - match.start() > MAX_BATCH_LINE_BYTES:
            return None  # not copied out to be refused
        line = match.group()
        if not line.strip():
            continue
        lines += 1
        if lines > MAX_BATCH_LINES or _too_many_values(line):
            return None
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        body = entry.get("body") if isinstance(entry, dict) else None
        model = body.get("model") if isinstance(body, dict) else None
        readable = (isinstance(model, str) and isinstance(body, dict)
                    and not _other_spellings(entry, body))
        entry = body = None  # the line's objects let go before the next reading
        if not readable or _repeats_a_name(line):
            # `Body`/`Model` beside the names read, or one of them given twice (orjson
            # keeps the last; Azure's batch runner may bind otherwise): not checkable
            return None
        assert isinstance(model, str)
        models.add(model)
    return frozenset(models)


def _too_many_values(line: bytes) -> bool:
    """Whether `line` may hold more than `MAX_BATCH_LINE_VALUES` values (every value
    but the first follows a comma or an opening)."""
    if len(line) <= _COUNTED_FROM:  # at most ~half a million values: never counted
        return False
    return (line.count(b",") + line.count(b"[") + line.count(b"{")
            >= MAX_BATCH_LINE_VALUES)


class _Repeated(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1:
        names = [name for name, _ in pairs]
        if names.count("body") > 1 or names.count("model") > 1:
            raise _Repeated


def _repeats_a_name(line: bytes) -> bool:
    """Whether an object in the JSON `line` (orjson read it) gives `body` or `model`
    twice. Nearly always told from the bytes: unescaped, each is written `"body"` or
    `"model"`, so one of each at most (a prompt's words count too: then the exact
    reading) proves it. Else exactly, whatever its strings hold (a bounded walk gave up
    on a long run of backslashes, which a message may hold): the standard library's C
    parser, every object's names handed to `_unique`; in the upload's worker thread."""
    if (line.count(b'"body"') <= 1 and line.count(b'"model"') <= 1
            and _NAME_ESCAPE.search(line) is None):
        return False
    try:
        json.loads(line, object_pairs_hook=_unique)
    except _Repeated:
        return True
    except (ValueError, RecursionError):  # what orjson read and it does not: deeper
        return True  # than its recursion limit (orjson reads 1,023 levels)
    return False


def _other_spellings(entry: dict[str, Any], body: dict[str, Any]) -> bool:
    """Whether a batch line spells `body` or its `model` in other letters."""
    return any(name != "body" and folded(name) == "body" for name in entry) or any(
        name != "model" and folded(name) == "model" for name in body)
