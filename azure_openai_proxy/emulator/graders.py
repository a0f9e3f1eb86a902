"""Fine-tuning graders: `POST fine_tuning/alpha/graders/run` and `.../validate`.

Served on v1 and on dated previews from 2025-04-01-preview, the version Azure's
reinforcement fine-tuning (which they grade) came with and its guide and blog use; that
older previews lack them is inferred, not published. What is accepted follows Azure's
reinforcement fine-tuning guide (MicrosoftDocs/azure-ai-docs, articles/ai-foundry/openai/
how-to/reinforcement-fine-tuning.md): a model grader (`score_model`, `label_model`) runs
on a base model named by its release, from a short list, and "model graders don't require
model deployments" (no deployment is looked up); a `multi` grader combines named graders
by a formula. The
answer is OpenAI's GraderRunResponse (openai-python `types/fine_tuning/alpha/
grader_run_response.py`): `reward`, `metadata` (name, type, errors, execution_time,
scores, token_usage, sampled_model_name), `sub_rewards`, `model_grader_token_usage_per_
model`. Azure's words for an unsupported grader are not published: these are the
emulator's, in Azure's error shape.

Emulated, not evaluated: a model grader scores the top of its `range` (its first label
for a label grader) and counts the tokens of its rendered prompt; a Python grader's code
is not run (reward 0); every text-similarity metric is difflib's ratio.
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from azure_openai_proxy.emulator import validation, wire_errors
from azure_openai_proxy.emulator.exchange import Exchange

# The models a model grader may name: the guide's table; the gpt-4.1 family added in
# April 2026 (Foundry blog "What's new in Foundry fine-tuning, April 2026").
GRADER_MODELS = frozenset({"gpt-4o-2024-08-06", "o3-mini-2025-01-31", "gpt-4.1-2025-04-14",
                           "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14"})
_TYPES = frozenset({"string_check", "text_similarity", "score_model", "label_model",
                    "python", "multi"})
_MOST_DEPTH = 8  # a multi grader nests graders; deeper is refused, not walked
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
_FORMULA_ERRORS = (ValueError, SyntaxError, ArithmeticError, TypeError, RecursionError)


async def run(ex: Exchange) -> web.StreamResponse:
    """A grader run: the grader checked, then scored on `model_sample` and `item`."""
    assert ex.version is not None
    grader = _grader(ex)
    sample = ex.body.get("model_sample")
    if sample is None:
        raise validation.missing("model_sample", ex.version)
    if not isinstance(sample, str):
        raise validation.invalid_type("model_sample", "a string", sample)
    item = ex.body.get("item")
    usage: dict[str, dict[str, int]] = {}
    reward, sub_rewards = _score(grader, sample, item if isinstance(item, dict) else {}, usage)
    tokens = sum(used["total_tokens"] for used in usage.values())
    model = grader.get("model") if isinstance(grader.get("model"), str) else None
    errors = dict.fromkeys(
        ("formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
         "model_grader_refusal_error", "model_grader_server_error", "other_error",
         "python_grader_runtime_error", "python_grader_server_error", "sample_parse_error",
         "truncated_observation_error", "unresponsive_reward_error"), False)
    return ex.json({"reward": reward, "metadata": {
        "name": grader["name"], "type": grader["type"], "errors": {
            **errors, "model_grader_server_error_details": None,
            "python_grader_runtime_error_details": None,
            "python_grader_server_error_type": None},
        "execution_time": 0.01, "scores": {}, "token_usage": tokens if usage else None,
        "sampled_model_name": model}, "sub_rewards": sub_rewards,
        "model_grader_token_usage_per_model": usage})


async def validate(ex: Exchange) -> web.StreamResponse:
    """A grader checked, not run: Azure answers it back."""
    return ex.json({"grader": _grader(ex)})


def _grader(ex: Exchange) -> dict[str, Any]:
    assert ex.version is not None
    grader = ex.body.get("grader")
    if grader is None:
        raise validation.missing("grader", ex.version)
    _check(grader, "grader", 0)
    assert isinstance(grader, dict)
    return grader


def _check(grader: object, where: str, depth: int) -> None:
    if not isinstance(grader, dict):
        raise validation.invalid_type(where, "an object", grader)
    kind = grader.get("type")
    if kind not in _TYPES or depth > _MOST_DEPTH:
        raise wire_errors.invalid_request(
            f"Invalid value for '{where}.type': {kind!r}.", f"{where}.type", "invalid_value")
    if not isinstance(grader.get("name"), str):
        raise wire_errors.invalid_request(f"Missing required parameter: '{where}.name'.",
                                          f"{where}.name", "missing_required_parameter")
    if kind in ("score_model", "label_model") and grader.get("model") not in GRADER_MODELS:
        raise wire_errors.invalid_request(
            f"The model {grader.get('model')!r} is not supported for model graders. "
            f"Supported models: {', '.join(sorted(GRADER_MODELS))}.",
            f"{where}.model", "invalid_value")
    if kind == "multi":
        graders = grader.get("graders")
        if not isinstance(graders, dict) or not graders:
            raise validation.invalid_type(f"{where}.graders", "an object", graders)
        for name, inner in graders.items():
            _check(inner, f"{where}.graders.{name}", depth + 1)
        try:
            _formula(str(grader.get("calculate_output")), dict.fromkeys(graders, 1.0))
        except _FORMULA_ERRORS:
            raise wire_errors.invalid_request(
                f"Invalid value for '{where}.calculate_output'.",
                f"{where}.calculate_output", "invalid_value") from None


def _score(grader: dict[str, Any], sample: str, item: Mapping[str, Any],
           usage: dict[str, dict[str, int]]) -> tuple[float, dict[str, float]]:
    """The grader's reward and, for a multi grader, each named grader's."""
    kind = grader["type"]
    if kind == "multi":
        subs = {name: _score(inner, sample, item, usage)[0]
                for name, inner in grader["graders"].items()}
        try:
            return _formula(str(grader["calculate_output"]), subs), subs
        except _FORMULA_ERRORS:  # checked with every score 1: these scores divide by 0
            return 0.0, subs
    if kind == "string_check":
        given = _render(grader.get("input"), sample, item)
        reference = _render(grader.get("reference"), sample, item)
        test = {"eq": given == reference, "ne": given != reference,
                "like": reference in given,
                "ilike": reference.lower() in given.lower()}.get(str(grader.get("operation")))
        return (1.0 if test else 0.0), {}
    if kind == "text_similarity":
        given = _render(grader.get("input"), sample, item)
        reference = _render(grader.get("reference"), sample, item)
        return difflib.SequenceMatcher(None, given, reference).ratio(), {}
    if kind == "python":
        return 0.0, {}
    prompt = _render(grader.get("input"), sample, item)
    used = usage.setdefault(grader["model"], {"prompt_tokens": 0, "completion_tokens": 0,
                                              "total_tokens": 0, "cached_tokens": 0})
    prompt_tokens = max(1, len(prompt) // 4)
    used["prompt_tokens"] += prompt_tokens
    used["completion_tokens"] += 20
    used["total_tokens"] += prompt_tokens + 20
    if kind == "label_model":
        labels, passing = grader.get("labels"), grader.get("passing_labels")
        first = labels[0] if isinstance(labels, list) and labels else None
        return (1.0 if isinstance(passing, list) and first in passing else 0.0), {}
    top = grader.get("range")
    if isinstance(top, list) and len(top) == 2 and type(top[1]) in (int, float):
        return float(top[1]), {}
    return 1.0, {}


def _render(template: object, sample: str, item: Mapping[str, Any]) -> str:
    """A grader's input with `{{ sample.output_text }}`, `{{ item.x.y }}` filled in (a
    list of messages: their text, one after another)."""
    if isinstance(template, list):
        return "\n".join(_render(m.get("content") if isinstance(m, dict) else m, sample, item)
                         for m in template)
    if not isinstance(template, str):
        return "" if template is None else orjson.dumps(template).decode()

    def value(found: re.Match[str]) -> str:
        namespace, _, path = found.group(1).partition(".")
        if namespace == "sample":
            return sample if path in ("output_text", "output_json") else ""
        node: Any = item if namespace == "item" else None
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node if isinstance(node, str) else "" if node is None else str(node)

    return _TEMPLATE.sub(value, template)


def _formula(text: str, scores: Mapping[str, float]) -> float:
    """A multi grader's `calculate_output` over its graders' scores: names, numbers,
    + - * / ^ and min, max, abs; nothing else is evaluated."""
    return float(_node(ast.parse(text.replace("^", "**"), mode="eval").body, scores))


def _node(node: ast.AST, scores: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id in scores:
        return scores[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_node(node.left, scores), _node(node.right, scores))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_node(node.operand, scores)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords and node.args):
        return float(_FUNCTIONS[node.func.id](*(_node(arg, scores) for arg in node.args)))
    raise ValueError("not a formula")
