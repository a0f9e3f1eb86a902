"""The layout is the architecture: lower layers never import upper ones. Read from the
source's own import statements (top-level and nested), so a new import that crosses a
layer fails here.

    core (pure)     errors settings addresses apiversions auth codings compat routing translate
                    sse normalize/ balancing/ boundedcache governance/ (keys, limits,
                    prices, usage records)  -> imports only core
    http/           the server engine               -> imports only http/
    upstream/       clients for Azure               -> core, upstream/
    observability/  record, access log, metrics     -> core, observability/
    store/          SQLite (and later engines)      -> core, store/
    config          settings from files and env     -> core, upstream/ (the Entra check)
    gateway/        the request path                -> all of the above; within it the
                    request path's steps import downward only: requestbody <- poolchoice,
                    translation <- attempts <- pipeline
    runtime/, cli   processes, signals, the demo    -> anything
    emulator/       a sibling                       -> only itself (and the gateway never
                                                        imports it)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "azure_openai_proxy"
CORE = {"errors", "settings", "addresses", "apiversions", "auth", "codings", "compat", "routing",
        "translate", "sse", "normalize", "balancing", "boundedcache", "governance", "__init__"}
ALLOWED: dict[str, set[str]] = {
    "core": CORE,
    "http": {"http"},
    "upstream": CORE | {"upstream"},
    "observability": CORE | {"observability"},
    "store": CORE | {"store"},
    "config": CORE | {"upstream", "config"},
    "gateway": CORE | {"http", "upstream", "observability", "gateway", "config", "store"},
    "emulator": {"emulator", "__init__"},
}


def layer_of(module: str) -> str | None:
    """The layer of a top-level part of the package ("http", "routing"...)."""
    if module in CORE:
        return "core"
    if module in ALLOWED:
        return module
    return None  # runtime, cli, __main__: the top, free to import anything


def imported_parts(path: Path) -> set[str]:
    """The top-level parts of azure_openai_proxy that `path` imports."""
    tree = ast.parse(path.read_text(), str(path))
    parts: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "azure_openai_proxy":  # `from azure_openai_proxy import x`
                names = ["azure_openai_proxy"]
        for name in names:
            if name.startswith("azure_openai_proxy."):
                parts.add(name.split(".")[1])
            elif name == "azure_openai_proxy":
                parts.add("__init__")
    return parts


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path: Path) -> None:
    relative = path.relative_to(PACKAGE)
    top = relative.parts[0].removesuffix(".py")
    layer = layer_of(top)
    if layer is None:
        return
    crossing = {part for part in imported_parts(path) if part not in ALLOWED[layer]}
    assert not crossing, f"{relative} ({layer}) imports {sorted(crossing)}"


def test_the_rule_catches_a_crossing(tmp_path: Path) -> None:
    offender = tmp_path / "m.py"
    offender.write_text("from azure_openai_proxy.gateway.app import create_app\n"
                        "def f():\n    import azure_openai_proxy.runtime.runner\n")
    assert imported_parts(offender) == {"gateway", "runtime"}


# The request path's steps, lowest first: each may import only the ones before it.
REQUEST_PATH = ("requestbody", "poolchoice", "translation", "attempts", "pipeline")


def _gateway_modules_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    return {node.module.split(".")[2] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            and node.module.startswith("azure_openai_proxy.gateway.")}


@pytest.mark.parametrize("step", REQUEST_PATH)
def test_the_request_path_steps_import_downward_only(step: str) -> None:
    later = set(REQUEST_PATH[REQUEST_PATH.index(step):])
    crossing = _gateway_modules_imported(PACKAGE / "gateway" / f"{step}.py") & later
    assert not crossing, f"gateway/{step}.py imports {sorted(crossing)}"


@pytest.mark.parametrize("step", REQUEST_PATH)
def test_the_request_path_steps_stay_small(step: str) -> None:
    lines = (PACKAGE / "gateway" / f"{step}.py").read_text().count("\n")
    assert lines <= (350 if step == "pipeline" else 500), f"gateway/{step}.py: {lines} lines"



# STYLE.md: a module with one job stays small; split it when it passes ~400 lines.
MAX_MODULE_LINES = 500


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_passes_500_lines(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)}: {lines} lines: split it by job"

def _private_names_we_define() -> set[str]:
    """Every `_name` the package defines: functions, classes, attributes set on self,
    slots, module and class variables."""
    defined: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                defined.add(node.value)  # __slots__ entries
    return {name for name in defined if name.startswith("_")}


def test_no_private_attribute_of_another_library_is_used() -> None:
    ours = _private_names_we_define()
    foreign: list[str] = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr not in ours):
                foreign.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not foreign, foreign


def test_the_engine_uses_no_aiohttp() -> None:
    for path in (PACKAGE / "http").rglob("*.py"):
        assert "aiohttp" not in path.read_text(), path
