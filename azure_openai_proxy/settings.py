"""Settings are a value: parsed once, frozen, passed to `create_app(settings)`.

`config.py` builds a `Settings` from a YAML file, the environment and flags; nothing else
reads `os.environ`. Keys (Azure's and the clients') are `SecretStr` so that printing a
setting never shows one.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from azure_openai_proxy.addresses import (
    check_endpoint,
    check_proxy,
    cleartext_host,
    proxy_warning,
    sqlite_file,
)
from azure_openai_proxy.apiversions import DEFAULT_API_VERSION, choose_api_version, deployment_need

__all__ = [
    "DEFAULT_API_VERSION",
    "FOUNDRY_API_VERSION",
    "ApiFamily",
    "DeploymentSettings",
    "PriceSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "sqlite_file",
]

# Azure deployment names: letters, digits, '-', '_', '.'; we also refuse a leading dot so a
# name can never be a dot-segment in a URL path.
DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
API_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2}(-preview)?|v1|preview|latest)\Z")

AuthMode = Literal["key", "passthrough", "entra"]
# `dated`: {endpoint}/openai/deployments/{dep}/...?api-version=V; `v1`: {endpoint}/openai/v1/...;
# `foundry`: Azure AI model inference, {endpoint}/models/...?api-version=V (translate.py).
ApiFamily = Literal["dated", "v1", "foundry"]
# The Azure AI model inference API's version, for a Foundry deployment that names none:
# a Foundry deployment does not inherit the Azure OpenAI default (`api_version:`).
FOUNDRY_API_VERSION = "2024-05-01-preview"
# a name or IPv4 address; an IPv6 address, bracketed or not, maybe with a zone (%eth0)
_LISTEN_HOST = re.compile(
    r"^([A-Za-z0-9_.\-]*|\[[0-9A-Fa-f:.]+(%[\w.\-]+)?\]|[0-9A-Fa-f:.]+(%[\w.\-]+)?)\Z", re.ASCII)
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# An admin key shorter than this gets a warning (check-config, the start).
MIN_ADMIN_KEY = 16


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeploymentSettings(_Frozen):
    """One Azure deployment that serves `model_name` to clients."""

    model_name: str = Field(min_length=1, max_length=256)
    deployment_name: str
    endpoint: str
    api_key: SecretStr | None = None
    # Without one configured (here or as the default), the version table chooses it once,
    # at load, for what the deployment serves; `api_version_reason` says how it was set.
    api_version: str = DEFAULT_API_VERSION
    api_version_reason: str = "explicit"
    api: ApiFamily = "dated"
    auth: AuthMode = "key"
    entra_scope: str = "https://cognitiveservices.azure.com/.default"
    # Finite and bounded: `.inf` (or weights whose sum overflows) made the weighted draw
    # subtract inf from inf, and the other members of the pool went first.
    weight: float = Field(default=1.0, gt=0, le=1_000_000, allow_inf_nan=False)
    priority: int = Field(default=1, ge=0)
    tpm: int | None = Field(default=None, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    model_family: Literal["auto", "reasoning", "standard"] = "auto"
    unsupported_params: tuple[str, ...] = ()

    @field_validator("deployment_name")
    @classmethod
    def _deployment_name_is_safe(cls, value: str) -> str:
        if not DEPLOYMENT_NAME.match(value):
            raise ValueError(
                "must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_key_means_passthrough(cls, data: object) -> object:
        # The Go tool's rule: a deployment without an api_key uses the client's own key.
        if isinstance(data, dict) and data.get("api_key") in (None, "") and (
            data.get("auth") in (None, "key")
        ):
            return {**data, "api_key": None, "auth": "passthrough"}
        return data

    @model_validator(mode="before")
    @classmethod
    def _api_version_chosen_when_unset(cls, data: object) -> object:
        if not isinstance(data, dict) or data.get("api_version") is not None:
            return data
        api = data.get("api", "dated")
        need = None
        if api in ("dated", "foundry"):
            need = deployment_need(str(data.get("deployment_name") or ""),
                                   str(data.get("model_name") or ""),
                                   str(data.get("model_family") or "auto"))
        if api == "foundry":
            # The model inference API's own version, unless it cannot serve the model
            # (OpenAI's reasoning models there follow Azure OpenAI's table).
            choice = choose_api_version(need, FOUNDRY_API_VERSION)
            reason = ("Foundry model inference default" if choice.reason == "default"
                      else choice.reason)
            return {**data, "api_version": choice.version, "api_version_reason": reason}
        choice = choose_api_version(need)
        return {**data, "api_version": choice.version, "api_version_reason": choice.reason}

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_http(cls, value: str) -> str:
        return check_endpoint(value)

    @field_validator("api_version")
    @classmethod
    def _api_version_is_known_shape(cls, value: str) -> str:
        if not API_VERSION.match(value):
            raise ValueError("must look like 2024-10-21, 2025-04-01-preview, v1 or preview")
        return value

    @property
    def key_label(self) -> str:
        """How this deployment authenticates, for logs and check-config (never the key)."""
        if self.auth == "key":
            return "api-key (configured)"
        if self.auth == "entra":
            return f"Entra ID ({self.entra_scope})"
        return "passthrough (client's key)"


_HTTP2_WORDS: dict[str, bool | str] = {
    "auto": "auto", **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False)}


class UpstreamSettings(_Frozen):
    # `fast`: our HTTP/1.1 client (asyncio + httptools), ~2.5x aiohttp's on the upstream hop
    # (bench/README.md), also through an HTTP proxy; `aiohttp`: aiohttp's client, SOCKS
    # proxies' (an HTTP proxy's is fast's); `auto`: fast (HTTP/2 by ALPN), aiohttp for SOCKS.
    transport: Literal["auto", "aiohttp", "fast"] = "auto"
    http_proxy: str | None = None
    socks_proxy: str | None = None
    # Upstream times are finite: aiohttp rounds its deadlines up with math.ceil, and
    # `connect_timeout: .inf` (or pool_timeout) made every request a 500 (OverflowError).
    connect_timeout: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    # Between two bytes of a response, not for the whole response: a long stream is fine.
    read_timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    pool_size: int = Field(default=0, ge=0)  # 0: unlimited connections per worker
    # How long a request waits for a free connection when `pool_size` are all busy;
    # then it fails over (nothing was sent) or gets a 503 with retry-after.
    pool_timeout: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    keepalive_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    # A JSON answer longer than this is a 502, never a truncated 200. A stream's event is
    # held up to this too, if less than its reader's bound (sse.py: 8 or 64 MiB).
    max_answer_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # FastTransport: seconds a host's addresses are reused (0: resolved every connection).
    dns_cache_ttl: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    # HTTP/2 to Azure (upstream/h2/): many requests multiplexed over a few connections, so
    # a worker's relayed streams need no descriptor each upstream (issue 15). `auto`: on
    # https, HTTP/2 where ALPN picks it (Azure does; so does Go's net/http, the Go tool's
    # client), HTTP/1.1 to http:// origins (no h2c guessing); `true`: also h2c prior
    # knowledge on http://; `false`: HTTP/1.1 only. `auto` is off with a proxy or aiohttp.
    http2: bool | Literal["auto"] = "auto"

    @field_validator("http2", mode="before")
    @classmethod
    def _http2_word(cls, value: object) -> object:
        # The environment gives a string; a file may too.
        if not isinstance(value, str):
            return value
        word = value.strip().lower()
        if word in _HTTP2_WORDS:
            return _HTTP2_WORDS[word]
        raise ValueError("must be auto, true or false (or 1/0, yes/no, on/off)")

    @field_validator("http_proxy", "socks_proxy")
    @classmethod
    def _proxy_is_a_url(cls, value: str | None) -> str | None:
        return check_proxy(value)

    @model_validator(mode="after")
    def _proxy_has_its_client(self) -> UpstreamSettings:
        # 'aiohttp' + an HTTP proxy loads, as before session 28: 'fast' serves it, warned.
        if self.transport == "fast" and self.proxy and not self.http_tunnel:
            raise ValueError("transport 'fast' does not do SOCKS proxies; use 'aiohttp' or 'auto'")
        if self.http2 is True and not self.direct:
            raise ValueError("http2 is for direct connections: not with an upstream proxy "
                             "nor transport 'aiohttp'")
        return self

    @property
    def proxy(self) -> str | None:
        """The upstream proxy in use: SOCKS's if both are set (the Go tool's order);
        `http_proxy` may hold a SOCKS URL (as Go's HTTP_PROXY may): aiohttp's client's."""
        return self.socks_proxy or self.http_proxy

    @property
    def http_tunnel(self) -> str | None:
        """The proxy in use if an HTTP one: FastTransport's CONNECT tunnels."""
        return self.proxy if self.proxy and self.proxy.startswith("http://") else None

    @property
    def direct(self) -> bool:
        """Our own clients talk to Azure (no proxy, not aiohttp): HTTP/2 is possible."""
        return self.transport != "aiohttp" and not self.proxy

    def http2_for(self, scheme: str) -> bool:
        """Whether an origin of `scheme` (`http` or `https`) is offered HTTP/2: on https
        it is still ALPN's choice (an origin without h2 gets HTTP/1.1)."""
        if not self.direct or self.http2 is False:
            return False
        return self.http2 is True or scheme == "https"


class ServerSettings(_Frozen):
    """The HTTP server that clients talk to (http/server.py `ServerLimits`). Timeouts
    are deadlines in seconds, however slowly the bytes trickle in. Finite: they are
    counted in sweeps, whole numbers (`.inf` passed, and the start was a traceback)."""

    head_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)  # a head, from its first byte
    body_timeout: float = Field(default=300.0, gt=0, allow_inf_nan=False)  # a body, from its head's end
    keepalive_timeout: float = Field(default=75.0, gt=0, allow_inf_nan=False)  # idle between requests
    send_timeout: float = Field(default=60.0, gt=0, allow_inf_nan=False)  # a client reading nothing
    max_connections: int = Field(default=10_000, ge=1)  # per worker; past it a 503
    # The listening socket's accept queue, bounded at start by net.core.somaxconn: long,
    # so that thousands of clients connecting at once are queued, not dropped and retried.
    backlog: int = Field(default=65_535, ge=1)


class PriceSettings(_Frozen):
    """A model's price in the config's `prices:` (USD per 1M tokens), over the shipped
    table (governance/prices.yaml)."""

    # finite: an infinite price (YAML's `.inf`) made every cost inf and spent a key's
    # budget at once
    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cached_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # audio tokens (governance/prices.py); unset, audio tokens cost the text rates
    audio_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cached_audio_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    audio_output: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # image tokens in (a model's pictures given to it); unset, they cost the text rates
    image_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cached_image_input: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # the routes billed by units (governance/prices.yaml says which)
    per_image: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    per_minute: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    per_1m_characters: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class Settings(_Frozen):
    listen: str = "0.0.0.0:8080"
    api_base: str = "/v1"
    deployments: tuple[DeploymentSettings, ...] = ()
    # Env mode of the Go tool: unmapped models go to this endpoint as deployment names.
    default_endpoint: str | None = None
    default_api_key: SecretStr | None = None
    default_api_version: str = DEFAULT_API_VERSION
    # Set by the operator (file `api_version:`, AZURE_OPENAI_API_VER, a flag): every
    # deployment without its own uses it unchanged. Else each gets the table's choice.
    default_api_version_explicit: bool = False
    model_fallback: bool = True
    client_keys: tuple[SecretStr, ...] = ()
    allow_open: bool = False
    cors: bool = False
    cors_origins: tuple[str, ...] = ("*",)
    upstream: UpstreamSettings = UpstreamSettings()
    server: ServerSettings = ServerSettings()
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    response_model: Literal["client", "azure"] = "client"
    keep_azure_fields: bool = True
    honour_client_api_version: bool = True
    log_level: str = "info"
    workers: int = Field(default=1, ge=1)
    # `fast`: our HTTP/1.1 server (asyncio + httptools, http/server.py), the one engine
    # (bench/README.md says why). aiohttp's server engine was removed: it wrote the raw
    # request head, `Authorization` included, to its log and its 400 body.
    server_engine: Literal["fast"] = "fast"
    # After a request arrives and after Azure answers, the event loop polls instead of
    # sleeping for this long (http/busypoll.py): less latency on a quiet gateway, for
    # some CPU. 0 turns it off; it is off by itself with under two CPUs.
    busy_poll_us: int = Field(default=200, ge=0, le=100_000)
    routing_strategy: Literal["weighted", "least-busy", "latency"] = "weighted"
    max_attempts: int = Field(default=3, ge=1)
    retry_budget_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    metrics: bool = True
    # Failover (see azure_openai_proxy.balancing): consecutive failures (5xx, connect
    # errors, timeouts) that open a deployment's circuit, and how long it stays open
    # before one probe request is let through.
    circuit_failures: int = Field(default=5, ge=1)
    circuit_open_seconds: float = Field(default=30.0, gt=0)
    # A 429 without retry-after / retry-after-ms cools the deployment down this long.
    cooldown_seconds: float = Field(default=10.0, gt=0)
    # `latency` strategy: how often a random deployment goes first, to notice recoveries.
    latency_exploration: float = Field(default=0.1, ge=0, le=1)
    # Reload when the config file changes (polled every 2 s), besides SIGHUP.
    watch_config: bool = False
    # Governance (virtual keys, teams, the usage ledger): `sqlite:///path/gateway.db`;
    # unset, the default place (store/sqlite.py default_database()).
    database: str | None = None
    # The key of the /admin/ API; unset, the admin API is off. Never a client key.
    admin_key: SecretStr | None = None
    # Model -> price, over the shipped table (the usage ledger's costs).
    prices: dict[str, PriceSettings] = Field(default_factory=dict)
    # Raw ledger records older than this are deleted (the daily rollups are kept).
    ledger_retention_days: int = Field(default=90, ge=1)
    ledger_writer: Literal["thread", "journal"] = "journal"  # ledgerjournal.py, ledger.py
    # Completion tokens reserved against TPM for a text-generating request that sets no
    # max_tokens / max_completion_tokens / max_output_tokens (times its `n`).
    default_completion_tokens: int = Field(default=1024, ge=0)

    @field_validator("api_base")
    @classmethod
    def _normalize_api_base(cls, value: str) -> str:
        value = "/" + value.strip().strip("/")
        if not re.match(r"^(/[A-Za-z0-9_.\-]+)*/?$", value):
            raise ValueError("must be a path such as /v1")
        return value.rstrip("/") if value != "/" else ""

    @model_validator(mode="before")
    @classmethod
    def _a_given_default_api_version_is_explicit(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("default_api_version") is not None:
            return {"default_api_version_explicit": True, **data}
        return data

    @field_validator("default_api_version")
    @classmethod
    def _default_api_version_is_known_shape(cls, value: str) -> str:
        # Checked here too: with no deployment configured (env mode) nothing else would.
        if not API_VERSION.match(value):
            raise ValueError("must look like 2024-10-21, 2025-04-01-preview, v1 or preview")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_is_known(cls, value: str) -> str:
        # A typo used to mean `info` silently; `warning` is how the access log is turned off.
        level = value.strip().lower()
        if level not in _LOG_LEVELS:
            raise ValueError("must be one of " + ", ".join(_LOG_LEVELS))
        return level

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 0.0.0.0:8080")
        # A host no listener can take (`my host`, `[::1`) passed, and the start was a
        # socket.gaierror's traceback.
        if not _LISTEN_HOST.match(host):
            raise ValueError("must be HOST:PORT with HOST a name or an IP address "
                             "([::1] for IPv6), e.g. 0.0.0.0:8080")
        return value if host else f"0.0.0.0:{port}"

    @field_validator("default_endpoint")
    @classmethod
    def _default_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_endpoint(value)

    @model_validator(mode="after")
    def _auth_is_coherent(self) -> Settings:
        if self.client_keys:
            passthrough = [d.model_name for d in self.deployments if d.auth == "passthrough"]
            if passthrough or (self.default_endpoint and self.default_api_key is None):
                names = ", ".join(passthrough) or "the default endpoint"
                raise ValueError(
                    "client_keys are set, so the gateway needs its own Azure key (or Entra ID) "
                    f"for every deployment; these have none: {names}"
                )
        return self

    @field_validator("database")
    @classmethod
    def _database_is_a_sqlite_file(cls, value: str | None) -> str | None:
        # Here, not only at start: a reload naming one it refuses is rejected (the admin
        # usage read it: a 500).
        if value is not None:
            sqlite_file(value)
        return value

    @field_validator("client_keys")
    @classmethod
    def _client_keys_are_keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        # `client_keys: ["${GATEWAY_KEY}"]` with the variable empty kept a key no client
        # can send (a presented key is read trimmed, and never empty): every request was
        # a 401 "Incorrect API key", which blamed the clients. The message shows no key.
        keys = tuple(key.get_secret_value().strip() for key in value)
        if "" in keys:
            raise ValueError(f"key #{keys.index('') + 1} is empty (an environment variable "
                             "set to nothing?): no client could send it")
        return tuple(SecretStr(key) for key in keys)

    @field_validator("admin_key")
    @classmethod
    def _admin_key_is_a_key(cls, value: SecretStr | None) -> SecretStr | None:
        # `admin_key: ""` (or `${ADMIN_KEY}` with the variable empty) turned the admin API
        # and governance on behind a key no client can send (a blank bearer is no key).
        if value is None:
            return None
        key = value.get_secret_value().strip()
        if not key:
            raise ValueError("is empty, so no one could open the admin API: remove "
                             "admin_key to turn the admin API off (with `database:` set, "
                             "virtual keys stay on), or give it a long random key")
        # Blanks around it (`admin_key: " k "`) no client can send: a presented key is
        # read trimmed (AZURE_OPENAI_PROXY_ADMIN_KEY is trimmed too).
        return SecretStr(key)

    @model_validator(mode="after")
    def _admin_key_is_its_own(self) -> Settings:
        # The admin key is compared first: shared with the clients (or an Azure key's
        # holders), each of them could open /admin/, mint keys without limits and read
        # the ledger. The message never shows a key.
        if self.admin_key is not None:
            admin = self.admin_key.get_secret_value()
            azure = [d.api_key for d in self.deployments] + [self.default_api_key]
            if any(k is not None and k.get_secret_value() == admin
                   for k in (*self.client_keys, *azure)):
                raise ValueError("admin_key must not be one of client_keys or an Azure "
                                 "api_key: whoever holds that key would open the admin API")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def holds_server_side_keys(self) -> bool:
        return self.default_api_key is not None or any(
            d.auth in ("key", "entra") for d in self.deployments
        )

    @property
    def governance_enabled(self) -> bool:
        """Virtual keys are served when a database or an admin key is configured
        (gateway/keydirectory.py); without either no database is opened or created."""
        return self.database is not None or self.admin_key is not None

    @property
    def admin_key_warning(self) -> str | None:
        """What check-config and the start say of an admin key short enough to guess (it
        is taken: refusing it would stop a gateway that ran with it)."""
        if self.admin_key is None or len(self.admin_key.get_secret_value()) >= MIN_ADMIN_KEY:
            return None
        return (f"admin_key is shorter than {MIN_ADMIN_KEY} characters: whoever guesses it "
                "can mint keys without limits; use a long random one (openssl rand -hex 24)")

    @property
    def cleartext_warning(self) -> str | None:
        """What check-config and the start say of http:// endpoints off this host: the
        Azure key, the client's key passed through or the Entra token crosses the network
        in clear (taken: an emulator or a sidecar on a private network is one)."""
        hosts = sorted({host for d in self.deployments
                        if (host := cleartext_host(d.endpoint)) is not None}
                       | ({host} if self.default_endpoint and (
                           host := cleartext_host(self.default_endpoint)) else set()))
        if not hosts:
            return None
        return (f"http:// endpoints off this host ({', '.join(hosts)}): each request's "
                "api-key (or bearer token) crosses the network unencrypted; use https://")

    @property
    def proxy_warning(self) -> str | None:
        """What check-config and the start say of the upstream proxy URL in use
        (addresses.py); a SOCKS URL may be given as http_proxy too. `transport: aiohttp`
        with an HTTP proxy is served by 'fast' (session 28): said, not refused."""
        if self.upstream.transport == "aiohttp" and self.upstream.http_tunnel:
            return ("upstream.transport 'aiohttp' does not do HTTP proxies any more: the "
                    "HTTP proxy's requests go through 'fast' (HTTP/1.1 over its CONNECT "
                    "tunnels); set upstream.transport to 'fast' or 'auto' to say so")
        return proxy_warning(self.upstream.proxy)

    @property
    def is_open_relay(self) -> bool:
        """True when anyone who can reach the gateway can spend the server's Azure quota."""
        return self.holds_server_side_keys and not self.client_keys and not self.governance_enabled
