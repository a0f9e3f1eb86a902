"""Build `Settings` from a YAML file, an environment mapping and command-line flags.

Precedence is flag > environment > file > default. The file may be the Go
azure-openai-proxy's `config.yaml` (`api_base`, `deployment_config`) unchanged, or use
our extensions (`models:` pools, `client_keys`, `upstream`, ...). The environment
variables are the Go tool's (`AZURE_OPENAI_ENDPOINT`, `AZURE_OPENAI_API_VER`,
`AZURE_OPENAI_MODEL_MAPPER`, `AZURE_OPENAI_API_KEY`, `AZURE_OPENAI_HTTP_PROXY`,
`AZURE_OPENAI_SOCKS_PROXY`) plus a few `AZURE_OPENAI_PROXY_*` ones of ours.

Every problem becomes one `ConfigError` that names the key and what is wrong; the
offending value is never echoed, since it may be a key.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from azure_openai_proxy.settings import API_VERSION, Settings
from azure_openai_proxy.upstream.entra import missing_entra_support

__all__ = ["ConfigError", "load_settings", "parse_model_mapper"]

log = logging.getLogger("azure_openai_proxy")

# Accepted so that old files still load, and read by nothing: each gets a one-line
# warning at load. `log_prompts` was never implemented; prompts are never logged.
_DEPRECATED_KEYS = {
    "log_prompts": "log_prompts is deprecated and ignored: the gateway never logs prompts",
}
# Settings fields whose error should name the key the user wrote, not ours.
_USER_KEYS = {
    "default_api_version": "api_version (AZURE_OPENAI_API_VER)",
    "default_endpoint": "endpoint (AZURE_OPENAI_ENDPOINT)",
    "default_api_key": "api_key (AZURE_OPENAI_API_KEY)",
}


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class _DuplicateKey(yaml.YAMLError):
    """A mapping that names a key twice: YAML (and Go's yaml.v3) refuse it, PyYAML kept
    the last value, so a second `api_key:` or a pool written twice replaced the first
    without a word."""

    def __init__(self, key: str, first: int, again: int) -> None:
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


class _StringDatesLoader(yaml.SafeLoader):
    """YAML without the timestamp resolver: `api_version: 2024-02-01` stays a string;
    a key written twice in one mapping is an error (`<<:` merge keys may be overridden)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # The line of each key no field name looks like: an error says where, not what.
        self.key_lines: dict[str, int] = {}

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise _DuplicateKey(str(key), lines[key], line)
            lines[key] = line
            if not _FIELD_NAME.match(str(key)):  # `2024: x` too
                self.key_lines.setdefault(str(key), line)
        return super().construct_mapping(node, deep)


_StringDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# `$${` is a `${` kept as written (docker compose's escape): a key, password or URL may
# hold one, and every `${` is otherwise read as a reference.
_ENV_OR_ESCAPE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A list or mapping whose substitution is under way: met again, it holds itself.
_UNDER_WAY: Any = object()

# The Go tool's flags that viper's AutomaticEnv also reads from the environment
# (`LISTEN=:8080`, `CORS=true`, `API_BASE`; `CONFIGFILE` is cli.py's): an image switched
# with its environment unchanged must listen where it did. Ours, below, win.
_GO_ENV_SCALARS = {"LISTEN": "listen", "API_BASE": "api_base", "CORS": "cors"}
# Our own environment variables, beside the Go tool's.
_ENV_SCALARS = {
    "AZURE_OPENAI_PROXY_LISTEN": "listen",
    "AZURE_OPENAI_PROXY_API_BASE": "api_base",
    "AZURE_OPENAI_PROXY_LOG_LEVEL": "log_level",
    "AZURE_OPENAI_PROXY_SERVER_ENGINE": "server_engine",
    "AZURE_OPENAI_PROXY_BUSY_POLL_US": "busy_poll_us",
    "AZURE_OPENAI_PROXY_DATABASE": "database",
    "AZURE_OPENAI_PROXY_ADMIN_KEY": "admin_key",
    "AZURE_OPENAI_PROXY_LEDGER_WRITER": "ledger_writer",
}
# ... and those of the `server:` section.
_ENV_SERVER = {
    "AZURE_OPENAI_PROXY_HEAD_TIMEOUT": "head_timeout",
    "AZURE_OPENAI_PROXY_BODY_TIMEOUT": "body_timeout",
    "AZURE_OPENAI_PROXY_KEEPALIVE_TIMEOUT": "keepalive_timeout",
    "AZURE_OPENAI_PROXY_SEND_TIMEOUT": "send_timeout",
    "AZURE_OPENAI_PROXY_MAX_CONNECTIONS": "max_connections",
    "AZURE_OPENAI_PROXY_BACKLOG": "backlog",
}

_TOP_LEVEL_KEYS = {
    "listen", "api_base", "deployment_config", "models", "endpoint", "api_key", "api_version",
    "model_mapper", "model_fallback", "client_keys", "allow_open", "cors", "cors_origins",
    "upstream", "max_body_bytes", "response_model", "keep_azure_fields",
    "honour_client_api_version", "log_level", "log_prompts", "workers", "routing_strategy",
    "max_attempts", "server_engine", "retry_budget_seconds", "shutdown_grace_seconds", "metrics",
    "circuit_failures", "circuit_open_seconds", "cooldown_seconds", "latency_exploration",
    "watch_config", "busy_poll_us", "database", "admin_key", "server", "prices",
    "ledger_retention_days", "ledger_writer", "default_completion_tokens",
}


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's top-level mapping, and the line of each key an error does not show."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    # UTF-16 with its byte order mark (Windows PowerShell's `>` and Out-File write it), as
    # the Go tool's yaml.v3 reads it; else UTF-8.
    utf16 = raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    try:
        text = raw.decode("utf-16" if utf16 else "utf-8")
    except UnicodeDecodeError as exc:
        # A comment saved as Latin-1 or GBK was a traceback at start and an unlogged
        # failure on reload. The bytes are not shown: the line may hold a key.
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (line {line}); "
                          "save it as UTF-8") from None
    loader = _StringDatesLoader(text)
    try:
        data = loader.get_single_data()
    except _DuplicateKey as exc:  # a field's name is shown, never a value (nor a model's)
        key = f"key {exc.key!r}" if _FIELD_NAME.match(exc.key) else "a key"
        raise ConfigError(f"config file {path}: {key} is written twice in one mapping "
                          f"(lines {exc.first} and {exc.again})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    except RecursionError:  # PyYAML's parser recurses per level: `[[[...` some 300 deep
        raise ConfigError(f"config file {path} nests lists or mappings too deeply") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    return _checked_mapping(data, f"config file {path}", loader.key_lines), loader.key_lines


def _checked_mapping(data: Any, where: str, lines: Mapping[str, int]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys at the top level")
    unknown = sorted(set(map(str, data)) - _TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {_shown_key(unknown[0], lines)}")
    return data


_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z_]{0,39}\Z")


def _shown_key(name: str, lines: Mapping[str, int] | None = None) -> str:
    """An unknown key as an error shows it: a field name misspelt, or, when it has what
    no field name has (digits, '-'), a key's value written without `api_key:` (a YAML
    `{..., sk-...}` is a key with no value), which is not shown."""
    if _FIELD_NAME.match(name):
        return repr(name)
    line = (lines or {}).get(name)  # c5beadf: `timeout2` or `x-base` said not where it was
    return ("(not shown, as it is no field name: a secret written without its `name:`?)"
            + (f" at line {line}" if line else ""))


def parse_model_mapper(text: str, where: str = "AZURE_OPENAI_MODEL_MAPPER") -> dict[str, str]:
    """`gpt-3.5-turbo=gpt-35-turbo, gpt-4o=my-4o` -> {model: deployment}.

    Whitespace around names is trimmed. `model:deployment` is accepted too (an old form
    of the Go tool's docs) when a pair has no `=`.
    """
    mapping: dict[str, str] = {}
    for raw_pair in text.split(","):
        pair = raw_pair.strip()
        if not pair:
            continue
        model, sep, deployment = pair.partition("=")
        if not sep:
            model, sep, deployment = pair.partition(":")
        model, deployment = model.strip(), deployment.strip()
        if not sep or not model or not deployment:
            raise ConfigError(
                f"{where}: {pair!r} is not MODEL=DEPLOYMENT "
                "(pairs are separated by commas)"
            )
        mapping[model] = deployment
    return mapping


def _file_model_mapper(value: Any) -> dict[str, str]:
    """The file's `model_mapper`: the environment variable's text, or a mapping."""
    if value is None:
        return {}
    if isinstance(value, str):
        return parse_model_mapper(value, "model_mapper")
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) and k.strip() and v.strip()
        for k, v in value.items()
    ):
        return {k.strip(): v.strip() for k, v in value.items()}
    raise ConfigError(
        "model_mapper must be MODEL=DEPLOYMENT pairs separated by commas, or a mapping "
        "of model names to deployment names"
    )


def _substitute_env(value: Any, environ: Mapping[str, str], where: str,
                    seen: dict[int, Any] | None = None) -> Any:
    """`api_key: ${AZURE_KEY_EAST}` reads the key from the environment; so does each
    `${NAME}` within a value (`endpoint: https://${RESOURCE}.openai.azure.com/` was
    kept as written: a host no DNS knows, and a 502 for every request)."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def read(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "${"
            if match.group(1) not in environ:
                raise ConfigError(f"{where}: environment variable {match.group(1)} is not set")
            return environ[match.group(1)]

        whole = _ENV_REFERENCE.fullmatch(value.strip())
        if whole is not None:
            return read(whole)
        if "${" in _ENV_OR_ESCAPE.sub("", value):
            # `${X:-default}`, `${ X }`: not ours; the value is not shown (a key?)
            raise ConfigError(f"{where}: write an environment variable as ${{NAME}} "
                              "(letters, digits and _), without a default or blanks, "
                              "and a `${` meant as written as `$${`")
        return _ENV_OR_ESCAPE.sub(read, value)
    if not isinstance(value, dict | list):
        return value
    # YAML's aliases make one list or mapping appear many times: each is substituted
    # once. Walked as a tree, nine levels of nine aliases (a few hundred bytes) were
    # 387 million strings: check-config and the start never ended.
    memo = seen if seen is not None else {}
    done = memo.get(id(value))
    if done is _UNDER_WAY:
        # `a: &x [*x]`: walked for ever, a RecursionError's traceback (and a reload's)
        raise ConfigError(f"{where}: a YAML alias names the list or mapping it is in")
    if done is not None:
        return done
    memo[id(value)] = _UNDER_WAY
    if isinstance(value, dict):
        done = {k: _substitute_env(v, environ, f"{where}.{k}", memo) for k, v in value.items()}
    else:
        done = [_substitute_env(v, environ, f"{where}[{i}]", memo) for i, v in enumerate(value)]
    memo[id(value)] = done
    return done


def _file_deployments(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    deployments: list[dict[str, Any]] = []
    flat = data.get("deployment_config") or []
    if not isinstance(flat, list):
        raise ConfigError("deployment_config must be a list of deployments")
    for index, item in enumerate(flat):
        if not isinstance(item, dict):
            raise ConfigError(f"deployment_config[{index}] must be a mapping")
        deployments.append(dict(item))
    pools = data.get("models") or {}
    if not isinstance(pools, dict):
        raise ConfigError("models must map a model name to a list of deployments")
    for model_name, members in pools.items():
        if not isinstance(members, list) or not members:
            raise ConfigError(f"models.{model_name} must be a non-empty list of deployments")
        for index, item in enumerate(members):
            if not isinstance(item, dict):
                raise ConfigError(f"models.{model_name}[{index}] must be a mapping")
            deployments.append({"model_name": str(model_name), **item})
    return deployments


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    layer: dict[str, Any] = {}
    if environ.get("AZURE_OPENAI_ENDPOINT", "").strip():
        layer["endpoint"] = environ["AZURE_OPENAI_ENDPOINT"].strip()
    if environ.get("AZURE_OPENAI_API_VER", "").strip():
        layer["api_version"] = environ["AZURE_OPENAI_API_VER"].strip()
    if environ.get("AZURE_OPENAI_API_KEY", "").strip():
        layer["api_key"] = environ["AZURE_OPENAI_API_KEY"].strip()
    upstream: dict[str, Any] = {}
    if environ.get("AZURE_OPENAI_HTTP_PROXY", "").strip():
        upstream["http_proxy"] = environ["AZURE_OPENAI_HTTP_PROXY"].strip()
    if environ.get("AZURE_OPENAI_SOCKS_PROXY", "").strip():
        upstream["socks_proxy"] = environ["AZURE_OPENAI_SOCKS_PROXY"].strip()
    if environ.get("AZURE_OPENAI_PROXY_UPSTREAM_HTTP2", "").strip():
        upstream["http2"] = environ["AZURE_OPENAI_PROXY_UPSTREAM_HTTP2"].strip()
    if upstream:
        layer["upstream"] = upstream
    keys = environ.get("AZURE_OPENAI_PROXY_CLIENT_KEYS", "")
    if keys.strip():
        layer["client_keys"] = [k.strip() for k in keys.split(",") if k.strip()]
    for env_name, key in (*_GO_ENV_SCALARS.items(), *_ENV_SCALARS.items()):
        if environ.get(env_name, "").strip():
            layer[key] = environ[env_name].strip()
    server = {key: environ[name].strip() for name, key in _ENV_SERVER.items()
              if environ.get(name, "").strip()}
    if server:
        layer["server"] = server
    mapper = parse_model_mapper(environ.get("AZURE_OPENAI_MODEL_MAPPER", ""))
    return layer, mapper


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _resolve_deployments(
    merged: dict[str, Any], file_deployments: list[dict[str, Any]], mapper: dict[str, str]
) -> list[dict[str, Any]]:
    endpoint = merged.get("endpoint")
    # Only a version the operator set is inherited; else each deployment's is chosen for
    # what it serves (settings.py, apiversions.py).
    api_version = merged.get("api_version")
    api_key = merged.get("api_key")
    if mapper and not endpoint:
        raise ConfigError(
            "AZURE_OPENAI_MODEL_MAPPER (or model_mapper) is set but AZURE_OPENAI_ENDPOINT "
            "is not (nor `endpoint:` in the file)"
        )
    from_env = [
        {"model_name": model, "deployment_name": dep, "endpoint": endpoint}
        for model, dep in mapper.items()
    ]
    # The environment's mapping replaces the file's entries for the same model name.
    # (a model_name that is a list or a mapping was a TypeError here, not a config error)
    kept = [d for d in file_deployments
            if not isinstance(d.get("model_name"), str) or d["model_name"] not in mapper]
    resolved = []
    for index, item in enumerate(kept + from_env):
        item = dict(item)
        if "api_version_reason" in item:
            name = item.get("model_name", f"#{index}")
            raise ConfigError(f"deployment for {name}: unknown key 'api_version_reason'")
        # Foundry's versions are not Azure OpenAI's: it never inherits the default.
        if item.get("api_version") is None and api_version is not None and (
                item.get("api") != "foundry"):
            item["api_version"] = api_version
        if item.get("api_version") is not None:
            item["api_version"] = str(item["api_version"])
        if not item.get("endpoint"):
            if not endpoint:
                name = item.get("model_name", f"#{index}")
                raise ConfigError(
                    f"deployment for {name}: no endpoint, and no default endpoint "
                    "(AZURE_OPENAI_ENDPOINT or `endpoint:`) is set"
                )
            item["endpoint"] = endpoint
        if item.get("api_key") in (None, "") and api_key and item.get("auth") != "entra":
            item["api_key"] = api_key
        resolved.append(item)
    return resolved


def _check_default_api_version(value: Any) -> None:
    """Before the deployments inherit it: one error naming the key, not one per deployment."""
    if value is not None and not API_VERSION.match(str(value)):
        raise ConfigError(
            f"{_USER_KEYS['default_api_version']}: must look like 2024-10-21, "
            "2025-04-01-preview, v1 or preview"
        )


def _go_env_origins(environ: Mapping[str, str], flags: Mapping[str, Any]) -> dict[str, str]:
    """key -> the Go tool's variable its value came from: `API_BASE` set for another
    program in a shared env file is named, not only the `api_base` no file holds."""
    ours = {key: name for name, key in _ENV_SCALARS.items()}
    return {key: name for name, key in _GO_ENV_SCALARS.items()
            if environ.get(name, "").strip() and key not in flags
            and not environ.get(ours.get(key, ""), "").strip()}


def _describe(exc: ValidationError, deployments: list[dict[str, Any]],
              key_lines: Mapping[str, int], origins: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) >= 2 and loc[0] == "deployments" and isinstance(loc[1], int):
            name = deployments[loc[1]].get("model_name", "?") if loc[1] < len(deployments) else "?"
            where = f"deployment for model {name!r}: " + ".".join(map(str, loc[2:]))
        elif loc and loc[0] in _USER_KEYS:
            where = _USER_KEYS[str(loc[0])]
        elif loc and loc[0] in origins:
            where = f"{loc[0]} (from the environment's {origins[str(loc[0])]})"
        else:
            where = ".".join(str(part) for part in loc) or "config"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and loc and not _FIELD_NAME.match(str(loc[-1])):
            where = where.removesuffix(str(loc[-1])).rstrip(".: ") or "config"
            message = f"unknown key {_shown_key(str(loc[-1]), key_lines)}"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def load_settings(
    config: str | Path | Mapping[str, Any] | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """The one way to make `Settings`. `config` is a file's path, or its already-parsed
    mapping. A missing config file is fine when the environment configures the gateway
    (the Go tool's env mode)."""
    lines: dict[str, int] = {}
    if config is None:
        file_data: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        file_data = _checked_mapping(dict(config), "config", lines)
    else:
        file_data, lines = read_config_file(config)
    file_data = _substitute_env(file_data, environ, "config")
    for key, warning in _DEPRECATED_KEYS.items():
        if key in file_data:
            log.warning("config: %s", warning)
    env_layer, env_mapper = _env_layer(environ)
    # The environment's pairs win over the file's for the same model name.
    mapper = {**_file_model_mapper(file_data.get("model_mapper")), **env_mapper}
    merged = _merge(file_data, env_layer, dict(flags or {}))
    _check_default_api_version(merged.get("api_version"))
    deployments = _resolve_deployments(merged, _file_deployments(file_data), mapper)

    raw: dict[str, Any] = {
        key: value
        for key, value in merged.items()
        if key not in {"deployment_config", "models", "endpoint", "api_key", "api_version",
                       "model_mapper", *_DEPRECATED_KEYS}
    }
    raw["deployments"] = deployments
    raw["default_endpoint"] = merged.get("endpoint")
    raw["default_api_key"] = merged.get("api_key") or None
    if merged.get("api_version"):  # else Settings' default, not explicit
        raw["default_api_version"] = str(merged["api_version"])
    if isinstance(raw.get("client_keys"), str):
        raw["client_keys"] = [k.strip() for k in raw["client_keys"].split(",") if k.strip()]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, deployments, lines,
                                    _go_env_origins(environ, flags or {}))) from None
    problem = missing_entra_support(settings)
    if problem is not None:
        raise ConfigError(problem)
    return settings
