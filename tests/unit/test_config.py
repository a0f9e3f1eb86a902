"""Settings from the Go tool's config.yaml and environment, and our extensions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from azure_openai_proxy.config import ConfigError, load_settings, parse_model_mapper

# The Go azure-openai-proxy's README example config, unchanged (note the unquoted dates).
GO_TOOL_CONFIG = """\
api_base: "/v1"
deployment_config:
  - deployment_name: "xxx"
    model_name: "text-davinci-003"
    endpoint: "https://xxx-east-us.openai.azure.com/"
    api_key: "11111111111"
    api_version: "2024-02-01"
  - deployment_name: "yyy"
    model_name: "gpt-3.5-turbo"
    endpoint: "https://yyy.openai.azure.com/"
    api_key: "11111111111"
    api_version: 2024-02-01
  - deployment_name: "zzzz"
    model_name: "text-embedding-ada-002"
    endpoint: "https://zzzz.openai.azure.com/"
    api_key: "11111111111"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_go_tool_config_loads_unchanged(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, GO_TOOL_CONFIG), {})
    assert settings.api_base == "/v1"
    by_model = {d.model_name: d for d in settings.deployments}
    assert set(by_model) == {"text-davinci-003", "gpt-3.5-turbo", "text-embedding-ada-002"}
    assert by_model["gpt-3.5-turbo"].deployment_name == "yyy"
    # An unquoted YAML date is read as the string it looks like.
    assert by_model["gpt-3.5-turbo"].api_version == "2024-02-01"
    # A deployment without api_version gets the default.
    assert by_model["text-embedding-ada-002"].api_version == "2024-10-21"
    # Trailing slash dropped, path kept.
    assert by_model["text-davinci-003"].endpoint == "https://xxx-east-us.openai.azure.com"
    assert by_model["yyy" and "gpt-3.5-turbo"].auth == "key"


def test_go_tool_env_mode() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com/",
        "AZURE_OPENAI_API_VER": "2024-02-01",
        "AZURE_OPENAI_MODEL_MAPPER": " gpt-3.5-turbo = gpt-35-turbo , gpt-4o=my-4o ,",
    }
    settings = load_settings(None, env)
    assert [(d.model_name, d.deployment_name) for d in settings.deployments] == [
        ("gpt-3.5-turbo", "gpt-35-turbo"),
        ("gpt-4o", "my-4o"),
    ]
    assert all(d.api_version == "2024-02-01" for d in settings.deployments)
    assert all(d.auth == "passthrough" for d in settings.deployments)
    assert settings.default_endpoint == "https://res.openai.azure.com"
    assert not settings.is_open_relay


def test_env_server_key_makes_keyed_deployments_and_open_relay_flag() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
        "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=my-4o",
        "AZURE_OPENAI_API_KEY": "server-secret",
    }
    settings = load_settings(None, env)
    assert settings.deployments[0].auth == "key"
    assert settings.is_open_relay
    keyed = load_settings(None, {**env, "AZURE_OPENAI_PROXY_CLIENT_KEYS": "a, b"})
    assert [k.get_secret_value() for k in keyed.client_keys] == ["a", "b"]
    assert not keyed.is_open_relay


def test_env_and_file_merge_with_env_winning(tmp_path: Path) -> None:
    config = write(tmp_path, GO_TOOL_CONFIG + 'listen: "127.0.0.1:9000"\n')
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://env.openai.azure.com",
        "AZURE_OPENAI_MODEL_MAPPER": "gpt-3.5-turbo=from-env",
        "AZURE_OPENAI_PROXY_LISTEN": "127.0.0.1:9100",
    }
    settings = load_settings(config, env)
    by_model = {d.model_name: d for d in settings.deployments}
    assert by_model["gpt-3.5-turbo"].deployment_name == "from-env"
    assert by_model["gpt-3.5-turbo"].endpoint == "https://env.openai.azure.com"
    assert by_model["text-davinci-003"].deployment_name == "xxx"
    assert settings.listen == "127.0.0.1:9100"
    # A flag beats both.
    assert load_settings(config, env, {"listen": "127.0.0.1:9200"}).listen == "127.0.0.1:9200"


def test_pools_and_env_references(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
client_keys: [ck-1]
models:
  gpt-4o:
    - {deployment_name: east, endpoint: https://east.openai.azure.com, api_key: "${EAST_KEY}", priority: 1, weight: 3}
    - {deployment_name: west, endpoint: https://west.openai.azure.com/apim/prefix, api_key: "${WEST_KEY}", priority: 2, api: v1}
""",
    )
    settings = load_settings(config, {"EAST_KEY": "k-east", "WEST_KEY": "k-west"})
    east, west = settings.deployments
    assert (east.model_name, west.model_name) == ("gpt-4o", "gpt-4o")
    assert east.api_key is not None and east.api_key.get_secret_value() == "k-east"
    assert west.endpoint == "https://west.openai.azure.com/apim/prefix"
    assert (east.weight, west.priority, west.api) == (3, 2, "v1")
    with pytest.raises(ConfigError, match="WEST_KEY is not set"):
        load_settings(config, {"EAST_KEY": "k-east"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'ftp://x'}\n",
         "deployment for model 'a': endpoint: must be an http"),
        ("deployment_config:\n  - {model_name: a, deployment_name: '../x', endpoint: 'https://x'}\n",
         "deployment_name: must be 1-64"),
        ("deployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'https://x', api_version: 'soon'}\n",
         "api_version: must look like"),
        ("deployment_config:\n  - {model_name: a, deployment_name: b}\n", "no endpoint"),
        ("listen: nowhere\n", "listen: must be HOST:PORT"),
        ("bogus_key: 1\n", "unknown key 'bogus_key'"),
        ("deployment_config: [\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a mapping"),
        ("client_keys: [k]\ndeployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'https://x'}\n",
         "need"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text), {})


def test_config_errors_never_echo_a_key(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "deployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'nope', "
        "api_key: 'SUPER-SECRET-KEY'}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "SUPER-SECRET-KEY" not in str(caught.value)
    settings = load_settings(
        write(tmp_path, "deployment_config:\n  - {model_name: a, deployment_name: b, "
                        "endpoint: 'https://x', api_key: 'SUPER-SECRET-KEY'}\n"), {})
    assert "SUPER-SECRET-KEY" not in repr(settings)


def test_model_mapper_forms() -> None:
    assert parse_model_mapper("a=b, c = d") == {"a": "b", "c": "d"}
    assert parse_model_mapper("gpt-3.5-turbo:gpt-35-turbo") == {"gpt-3.5-turbo": "gpt-35-turbo"}
    assert parse_model_mapper("") == {}
    with pytest.raises(ConfigError, match="not MODEL=DEPLOYMENT"):
        parse_model_mapper("gpt-4o")


def test_mapper_without_endpoint_is_an_error() -> None:
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT is not"):
        load_settings(None, {"AZURE_OPENAI_MODEL_MAPPER": "a=b"})


def test_proxies_from_env() -> None:
    settings = load_settings(None, {
        "AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
        "AZURE_OPENAI_SOCKS_PROXY": "socks5://127.0.0.1:1080",
        "AZURE_OPENAI_HTTP_PROXY": "http://127.0.0.1:3128",
    })
    assert settings.upstream.socks_proxy == "socks5://127.0.0.1:1080"
    assert settings.upstream.http_proxy == "http://127.0.0.1:3128"


def test_busy_poll_window_from_file_and_env(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, GO_TOOL_CONFIG), {}).busy_poll_us == 200
    config = write(tmp_path, GO_TOOL_CONFIG + "busy_poll_us: 50\n")
    assert load_settings(config, {}).busy_poll_us == 50
    assert load_settings(config, {"AZURE_OPENAI_PROXY_BUSY_POLL_US": "0"}).busy_poll_us == 0
    with pytest.raises(ConfigError, match="busy_poll_us"):
        load_settings(write(tmp_path, GO_TOOL_CONFIG + "busy_poll_us: -1\n"), {})


def test_log_prompts_is_deprecated_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        settings = load_settings({"log_prompts": True}, {})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "log_prompts" in warnings[0] and "\n" not in warnings[0]
    assert not hasattr(settings, "log_prompts")  # nothing can read it, so nothing logs prompts
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="azure_openai_proxy"):
        load_settings({}, {})
    assert not caplog.records


@pytest.mark.parametrize(
    "mapper", ["gpt-3.5-turbo=gpt-35-turbo, gpt-4o=my-4o", {"gpt-3.5-turbo": "gpt-35-turbo", "gpt-4o": "my-4o"}]
)
def test_model_mapper_in_the_config_file(mapper: object) -> None:
    settings = load_settings({"endpoint": "https://res.openai.azure.com/", "model_mapper": mapper}, {})
    assert [(d.model_name, d.deployment_name, d.endpoint) for d in settings.deployments] == [
        ("gpt-3.5-turbo", "gpt-35-turbo", "https://res.openai.azure.com"),
        ("gpt-4o", "my-4o", "https://res.openai.azure.com"),
    ]
    # The environment's pair wins for the same model; the file's others stay.
    env = {"AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=env-4o"}
    merged = load_settings({"endpoint": "https://res.openai.azure.com/", "model_mapper": mapper}, env)
    assert {d.model_name: d.deployment_name for d in merged.deployments} == {
        "gpt-3.5-turbo": "gpt-35-turbo", "gpt-4o": "env-4o",
    }


@pytest.mark.parametrize("mapper", ["gpt-4o", ["a=b"], {"a": 1}, {"a": " "}])
def test_bad_model_mapper_in_the_file_names_the_key(mapper: object) -> None:
    with pytest.raises(ConfigError, match=r"^model_mapper"):
        load_settings({"endpoint": "https://res.openai.azure.com/", "model_mapper": mapper}, {})


def test_model_mapper_without_endpoint_is_an_error() -> None:
    with pytest.raises(ConfigError, match="model_mapper"):
        load_settings({"model_mapper": "a=b"}, {})


@pytest.mark.parametrize(
    ("config", "env"),
    [
        (None, {"AZURE_OPENAI_ENDPOINT": "https://r.example", "AZURE_OPENAI_API_VER": "yesterday"}),
        ({"endpoint": "https://r.example", "api_version": "2024-1-1"}, {}),
        ({"api_version": "bad", "deployment_config": [
            {"model_name": "m", "deployment_name": "d", "endpoint": "https://r.example"}]}, {}),
    ],
)
def test_bad_default_api_version_is_one_line_naming_the_key(
    config: dict[str, Any] | None, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env)
    message = str(caught.value)
    assert message.startswith("api_version (AZURE_OPENAI_API_VER): must look like")
    assert "\n" not in message and ";" not in message


def test_log_level_is_checked_at_load() -> None:
    assert load_settings({"log_level": "WARNING"}, {}).log_level == "warning"
    assert load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.example",
                                "AZURE_OPENAI_PROXY_LOG_LEVEL": "debug"}).log_level == "debug"
    with pytest.raises(ConfigError, match=r"^log_level: must be one of debug, info, warning"):
        load_settings({"log_level": "verbose"}, {})  # was silently `info`


def test_a_foundry_deployment_loads_with_its_own_api_version(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, """
api_version: "2025-04-01-preview"
models:
  llama:
    - {deployment_name: Llama-3-70B, endpoint: "https://f.services.ai.azure.com/", api: foundry}
    - {deployment_name: llama-pinned, endpoint: "https://g.services.ai.azure.com/", api: foundry,
       api_version: "2024-12-01-preview"}
    - {deployment_name: gpt-4o, endpoint: "https://a.openai.azure.com/"}
"""), {})
    by_name = {d.deployment_name: d for d in settings.deployments}
    assert by_name["Llama-3-70B"].api == "foundry"
    # the file's api_version is Azure OpenAI's default: not Foundry's
    assert by_name["Llama-3-70B"].api_version == "2024-05-01-preview"
    assert by_name["Llama-3-70B"].api_version_reason == "Foundry model inference default"
    assert by_name["llama-pinned"].api_version == "2024-12-01-preview"  # explicit: kept
    assert by_name["llama-pinned"].api_version_reason == "explicit"
    assert by_name["gpt-4o"].api == "dated"
    assert by_name["gpt-4o"].api_version == "2025-04-01-preview"


@pytest.mark.parametrize("value", ["Foundry", "azure-ai", "", "inference"])
def test_a_bad_api_value_is_one_clear_line(tmp_path: Path, value: str) -> None:
    text = ("deployment_config:\n  - {model_name: a, deployment_name: b, "
            f"endpoint: 'https://x', api: '{value}'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {})
    message = str(caught.value)
    assert message == "deployment for model 'a': api: Input should be 'dated', 'v1' or 'foundry'"


# ---- api-versions: explicit, default, or chosen for what a deployment serves ----


def _deployment(model: str, **extra: Any) -> dict[str, Any]:
    return {"model_name": model, "deployment_name": model, "endpoint": "https://r.example",
            **extra}


def test_a_reasoning_deployment_without_api_version_gets_one_that_serves_it() -> None:
    settings = load_settings({"deployment_config": [_deployment("o3-mini"),
                                                    _deployment("gpt-4o")]}, {})
    o3, gpt4o = settings.deployments
    assert (o3.api_version, o3.api_version_reason) == (
        "2025-04-01-preview", "chosen for o3-mini: reasoning models need >= 2024-12-01-preview"
    )
    assert (gpt4o.api_version, gpt4o.api_version_reason) == ("2024-10-21", "default")
    assert not settings.default_api_version_explicit


@pytest.mark.parametrize(
    ("config", "environ"),
    [
        ({"api_version": "2024-10-21"}, {}),
        ({}, {"AZURE_OPENAI_API_VER": "2024-10-21"}),
    ],
)
def test_an_explicit_default_api_version_is_never_changed(
    config: dict[str, Any], environ: dict[str, str]
) -> None:
    # The operator asked for 2024-10-21 (even if it is the default's value): o3-mini keeps
    # it, and is refused on the request path with the message naming the version needed.
    settings = load_settings({**config, "deployment_config": [_deployment("o3-mini")]}, environ)
    (o3,) = settings.deployments
    assert (o3.api_version, o3.api_version_reason) == ("2024-10-21", "explicit")
    assert settings.default_api_version_explicit


def test_a_deployments_own_api_version_is_never_changed() -> None:
    settings = load_settings(
        {"deployment_config": [_deployment("o4-mini", api_version="2024-12-01-preview")]}, {}
    )
    (o4,) = settings.deployments
    assert (o4.api_version, o4.api_version_reason) == ("2024-12-01-preview", "explicit")


def test_env_mapper_deployments_get_a_chosen_version_without_azure_openai_api_ver() -> None:
    env = {"AZURE_OPENAI_ENDPOINT": "https://r.example",
           "AZURE_OPENAI_MODEL_MAPPER": "o3-mini=my-o3,gpt-4o=my-4o"}
    by_model = {d.model_name: d for d in load_settings(None, env).deployments}
    assert by_model["o3-mini"].api_version == "2025-04-01-preview"
    assert by_model["gpt-4o"].api_version == "2024-10-21"


def test_the_reason_is_not_a_config_key() -> None:
    with pytest.raises(ConfigError, match="api_version_reason"):
        load_settings({"deployment_config": [_deployment("o3-mini",
                                                         api_version_reason="explicit")]}, {})


def test_the_v1_api_is_left_alone() -> None:
    settings = load_settings({"deployment_config": [_deployment("o3-mini", api="v1")]}, {})
    assert settings.deployments[0].api_version_reason == "default"


def test_settings_made_directly_know_a_given_default_api_version_is_explicit() -> None:
    from azure_openai_proxy.settings import Settings

    assert Settings(default_api_version="2024-02-01").default_api_version_explicit
    assert not Settings().default_api_version_explicit


def test_a_foundry_deployment_gets_foundrys_version_unless_its_model_needs_newer() -> None:
    settings = load_settings({"deployment_config": [
        _deployment("DeepSeek-R1", api="foundry"), _deployment("o3-mini", api="foundry")]}, {})
    deepseek, o3 = settings.deployments
    assert (deepseek.api_version, deepseek.api_version_reason) == (
        "2024-05-01-preview", "Foundry model inference default")
    assert (o3.api_version, o3.api_version_reason) == (
        "2025-04-01-preview", "chosen for o3-mini: reasoning models need >= 2024-12-01-preview")


@pytest.mark.parametrize(("database", "message"), [
    ("postgres://db/gateway", "database: only sqlite:// databases"),
    ("sqlite:////var/gw.db?mode=ro", "database: a sqlite:// database is a file path without `?`"),
    ("sqlite:///:memory:", "not :memory:"),
])
def test_a_database_url_is_checked_wherever_settings_are_read(database: str, message: str) -> None:
    """A reload (SIGHUP, --watch-config) reads the settings with load_settings alone: the
    URL was checked only at start, so a reload took one the store refuses and GET
    /admin/usage answered 500 (session 23's review)."""
    env = {"AZURE_OPENAI_ENDPOINT": "https://a.openai.azure.com/"}
    with pytest.raises(ConfigError, match=message):  # main: taken
        load_settings({"database": database}, env)
    assert load_settings({"database": "sqlite:////srv/team#2/gw.db"}, env).database


# An upstream proxy or an endpoint whose URL aiohttp cannot use passed check-config, and
# then every request was a 500 with a traceback. Refused at load now, in a message that
# never holds the URL's password.
PROXY_PASSWORD = "pr0xy-s3cret"


@pytest.mark.parametrize("url, kept", [
    (f"http://user:{PROXY_PASSWORD}@proxy.internal", f"http://user:{PROXY_PASSWORD}@proxy.internal:80"),
    ("socks5://127.0.0.1", "socks5://127.0.0.1:1080"),
    ("socks5://[::1]", "socks5://[::1]:1080"),
    ("socks5h://proxy", "socks5://proxy:1080"),  # Go's x/net/proxy takes it; ours resolve remotely
    ("socks4a://proxy:1081", "socks4://proxy:1081"),
    ("HTTP://proxy:3128/", "http://proxy:3128"),
    ("http://proxy:3128/squid/", "http://proxy:3128"),  # a path: ignored, as Go's net/http does
    (f"socks5://u:{PROXY_PASSWORD}@proxy/x", f"socks5://u:{PROXY_PASSWORD}@proxy:1080"),
    ("http://proxy:3128", "http://proxy:3128"),
])
def test_a_proxy_without_a_port_gets_the_go_tools_default(url: str, kept: str) -> None:
    # Go's net/http gives a proxy URL without a port 80 (http) or 1080 (socks5); so
    # AZURE_OPENAI_HTTP_PROXY=http://proxy worked with the Go tool.
    from python_socks import parse_proxy_url

    for variable, field in (("AZURE_OPENAI_HTTP_PROXY", "http_proxy"),
                            ("AZURE_OPENAI_SOCKS_PROXY", "socks_proxy")):
        settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "https://r.openai.azure.com",
                                        variable: url})
        proxy = getattr(settings.upstream, field)
        assert proxy == kept
        parse_proxy_url(proxy)  # what the aiohttp transport's connector does with it


@pytest.mark.parametrize("url", [
    f"http://user:{PROXY_PASSWORD}@proxy:notaport",
    f"http://user:{PROXY_PASSWORD}@proxy:65536",
    f"http://user:{PROXY_PASSWORD}@proxy:0",
    f"socks5://user:{PROXY_PASSWORD}@[::1:1080",
    f"ftp://user:{PROXY_PASSWORD}@proxy:21",
    f"https://user:{PROXY_PASSWORD}@proxy:443",  # aiohttp-socks has no TLS to the proxy
    f"user:{PROXY_PASSWORD}@proxy:3128",
    f"http://user:{PROXY_PASSWORD}@:3128",
    f"http://user:{PROXY_PASSWORD}@proxy:3128?x=1",
])
def test_a_proxy_url_aiohttp_cannot_use_is_a_config_error_without_its_password(url: str) -> None:
    for config in ({"upstream": {"http_proxy": url}}, {"upstream": {"socks_proxy": url}}):
        with pytest.raises(ConfigError) as caught:
            load_settings({**config, "endpoint": "https://r.openai.azure.com"}, {})
        message = str(caught.value)
        assert message.startswith("upstream.") and "must be a URL such as" in message
        assert PROXY_PASSWORD not in message and "\n" not in message


@pytest.mark.parametrize("endpoint", [
    "https://r.openai.azure.com:99999", "http://127.0.0.1:65536", "http://127.0.0.1:0",
    "http://[::1:8001", "https://r.openai.azure.com:port",
])
def test_an_endpoint_aiohttp_cannot_parse_is_a_config_error(endpoint: str) -> None:
    for config in ({"endpoint": endpoint, "model_mapper": "gpt-4o=gpt-4o"},
                   {"deployment_config": [{"model_name": "gpt-4o", "deployment_name": "d",
                                           "endpoint": endpoint}]}):
        with pytest.raises(ConfigError, match="port from 1 to 65535"):
            load_settings(config, {})


def test_an_endpoint_with_user_and_password_is_refused_without_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"AZURE_OPENAI_ENDPOINT": f"https://me:{PROXY_PASSWORD}@r.openai.azure.com"})
    assert "user:password" in str(caught.value) and PROXY_PASSWORD not in str(caught.value)


def test_an_endpoints_scheme_is_read_in_any_case_as_go_does() -> None:
    settings = load_settings(None, {"AZURE_OPENAI_ENDPOINT": "HTTPS://r.openai.azure.com/",
                                    "AZURE_OPENAI_MODEL_MAPPER": "gpt-4o=gpt-4o"})
    assert settings.deployments[0].endpoint == "https://r.openai.azure.com"
    assert settings.default_endpoint == "https://r.openai.azure.com"


@pytest.mark.parametrize("comment, encoding", [("# café\n", "latin-1"), ("# 部署\n", "gbk")])
def test_a_config_file_not_in_utf8_is_a_config_error_naming_the_line(
        tmp_path: Path, comment: str, encoding: str) -> None:
    # A comment saved by an editor in Latin-1 or GBK was a UnicodeDecodeError's
    # traceback at start and in check-config, and a reload failing outside
    # "reload rejected" (only a ConfigError keeps the old configuration and says why).
    path = tmp_path / "config.yaml"
    path.write_bytes((GO_TOOL_CONFIG + comment).encode(encoding))
    line = GO_TOOL_CONFIG.count("\n") + 1
    with pytest.raises(ConfigError, match=rf"is not UTF-8 text \(line {line}\); save it as UTF-8"):
        load_settings(path, {})


@pytest.mark.parametrize("model_name", [["gpt-4o"], {"gpt-4o": 1}])
def test_a_model_name_that_is_not_a_string_is_a_config_error(model_name: Any) -> None:
    # A list or a mapping there was a TypeError (unhashable) while the file's entries
    # were matched against the model mapper: a traceback, and a reload failing outside
    # "reload rejected".
    flat = {"model_name": model_name, "deployment_name": "d", "endpoint": "https://x"}
    for config in ({"deployment_config": [flat]},
                   {"models": {"gpt-4o": [flat]}}):
        with pytest.raises(ConfigError, match="model_name: Input should be a valid string"):
            load_settings(config, {})


def test_a_listen_port_of_other_digits_is_refused_with_the_usual_message() -> None:
    # '²' is a digit to str.isdigit() and not to int(): the message was int()'s.
    with pytest.raises(ConfigError, match=r"^listen: must be HOST:PORT, e\.g\. 0\.0\.0\.0:8080$"):
        load_settings({"listen": "0.0.0.0:8²", "endpoint": "https://x"}, {})


@pytest.mark.parametrize("listen", ["my host:8080", "[::1:8080", "host/x:8080", "ünï.local:8080"])
def test_a_listen_host_no_socket_can_take_is_a_config_error(listen: str) -> None:
    # Accepted, and the start was a socket.gaierror's traceback from getaddrinfo.
    with pytest.raises(ConfigError, match=r"^listen: must be HOST:PORT with HOST a name or an IP"):
        load_settings({"listen": listen, "endpoint": "https://x"}, {})


@pytest.mark.parametrize("listen, host", [
    ("0.0.0.0:8080", "0.0.0.0"), ("[::1]:8080", "::1"), ("::1:8080", "::1"), (":8080", "0.0.0.0"),
    ("localhost:8080", "localhost"), ("[fe80::1%eth0]:8080", "fe80::1%eth0"),
    ("gateway_1.internal:8080", "gateway_1.internal"),
])
def test_listen_hosts_that_sockets_take(listen: str, host: str) -> None:
    assert load_settings({"listen": listen, "endpoint": "https://x"}, {}).host == host


def test_an_environment_variable_within_a_value_is_read_too() -> None:
    # `${RESOURCE}` inside the endpoint stayed as written: the gateway then asked DNS for
    # `${resource}.openai.azure.com`, and every request was a 502.
    config = {"deployment_config": [{"model_name": "gpt-4o", "deployment_name": "gpt-4o",
                                     "endpoint": "https://${RESOURCE}.openai.azure.com/",
                                     "api_key": "${KEY}"}]}
    settings = load_settings(config, {"RESOURCE": "east", "KEY": "k"})
    assert settings.deployments[0].endpoint == "https://east.openai.azure.com"
    with pytest.raises(ConfigError, match=r"deployment_config\[0\]\.endpoint: environment "
                                          "variable RESOURCE is not set"):
        load_settings(config, {"KEY": "k"})


@pytest.mark.parametrize("written", ["${AZURE_KEY:-fallback-s3cret}", "sk-${ KEY }-s3cret"])
def test_an_environment_reference_we_do_not_read_is_an_error_not_kept(written: str) -> None:
    # Kept as written, it was sent to Azure as the key.
    config = {"deployment_config": [{"model_name": "gpt-4o", "deployment_name": "gpt-4o",
                                     "endpoint": "https://east.openai.azure.com/",
                                     "api_key": written}]}
    with pytest.raises(ConfigError, match=r"api_key: write an environment variable as \$\{NAME\}") as caught:
        load_settings(config, {"AZURE_KEY": "k", "KEY": "k"})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("text, where", [
    ("deployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'https://x', "
     "0123abcdef456789s3cret}\n", "deployment for model 'a'"),
    ("sk-aop-s3cret123:\nendpoint: https://x\n", "config file"),
    ("upstream: {http_proxy: 'http://p:1', pr0xyS3cret}\nendpoint: https://x\n", "upstream"),
    ("client_keys: [k]\nserver: {sk-team-s3cret: 1}\nendpoint: https://x\napi_key: a\n", "server"),
])
def test_an_unknown_key_that_may_be_a_secret_is_not_shown(tmp_path: Path, text: str,
                                                          where: str) -> None:
    # A secret written without its `api_key:` (YAML's `{..., sk-...}` is a key with no
    # value) came back in the message as the unknown key's name: on the console, in CI
    # logs, in a reload's log line.
    with pytest.raises(ConfigError, match=rf"^{where}.*: unknown key \(not shown") as caught:
        load_settings(write(tmp_path, text), {})
    assert "s3cret" not in str(caught.value).lower()


def test_a_misspelt_field_is_still_named(tmp_path: Path) -> None:
    for text, message in (
            ("server: {head_timeot: 1}\nendpoint: https://x\n",
             "server.head_timeot: Extra inputs are not permitted"),
            ("deployment_config:\n  - {model_name: a, deployment_name: b, endpoint: 'https://x', "
             "apikey: k}\n", "deployment for model 'a': apikey: Extra inputs are not permitted")):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            load_settings(write(tmp_path, text), {})


@pytest.mark.parametrize("weight", [".inf", "1e308"])
def test_a_weight_past_a_million_is_a_config_error(tmp_path: Path, weight: str) -> None:
    # `.inf` passed `gt: 0`; the weighted draw then subtracted inf from inf (nan) and
    # chose the pool's last member, whatever the weights (two of 1e308 sum to inf).
    text = ("models:\n  gpt-4o:\n"
            f"    - {{deployment_name: a, endpoint: 'https://a', api_key: k, weight: {weight}}}\n"
            f"    - {{deployment_name: b, endpoint: 'https://b', api_key: k, weight: {weight}}}\n"
            "    - {deployment_name: c, endpoint: 'https://c', api_key: k}\n")
    with pytest.raises(ConfigError, match="deployment for model 'gpt-4o': weight: "):
        load_settings(write(tmp_path, text), {})


def test_yaml_aliases_are_substituted_once_not_once_per_appearance(tmp_path: Path) -> None:
    # Six levels of nine aliases, under 400 bytes: walked as a tree, 531,441 strings
    # (2 s here; nine levels never ended and took gigabytes). Go's YAML library refuses
    # such aliasing; each aliased node is now read once.
    import time

    text = 'endpoint: https://x\ncors_origins:\n  - &a0 ["x","x","x","x","x","x","x","x","x"]\n'
    for level in range(1, 6):
        text += f"  - &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]\n"
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"cors_origins\.0: Input should be a valid string"):
        load_settings(write(tmp_path, text), {})
    assert time.perf_counter() - started < 0.5


def test_an_aliased_value_is_substituted_at_every_place_it_appears(tmp_path: Path) -> None:
    text = ("deployment_config:\n"
            "  - &east {model_name: gpt-4o, deployment_name: a, endpoint: 'https://a', "
            "api_key: '${EAST}'}\n"
            "  - *east\n"
            "  - {model_name: gpt-4o-mini, deployment_name: b, endpoint: 'https://b', "
            "api_key: '${EAST}'}\n")
    settings = load_settings(write(tmp_path, text), {"EAST": "k"})
    assert [d.api_key.get_secret_value() for d in settings.deployments if d.api_key] == ["k"] * 3


@pytest.mark.parametrize("depth", [900])
def test_a_config_nested_past_the_parsers_depth_is_a_config_error(tmp_path: Path,
                                                                  depth: int) -> None:
    # PyYAML's parser recurses per level: a RecursionError's traceback at start, and a
    # --watch-config reload that ended the watcher (only a ConfigError is caught there).
    text = "cors_origins: " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(ConfigError, match=r"nests lists or mappings too deeply$"):
        load_settings(write(tmp_path, text), {})


def test_an_empty_client_key_is_a_config_error(tmp_path: Path) -> None:
    # `${GATEWAY_KEY}` set to nothing (docker compose passes an unset variable on as
    # empty) kept a key no client can send: every request a 401 blaming the client.
    text = ("client_keys: [team-key, '${GATEWAY_KEY}']\napi_key: k\n"
            "deployment_config:\n  - {model_name: a, deployment_name: a, endpoint: 'https://x'}\n")
    with pytest.raises(ConfigError, match=r"^client_keys: key #2 is empty"):
        load_settings(write(tmp_path, text), {"GATEWAY_KEY": ""})


def test_blanks_around_a_client_key_are_not_part_of_it(tmp_path: Path) -> None:
    # A presented key is read trimmed: ' team-key ' could never be matched.
    text = ("client_keys: [' team-key ']\napi_key: k\n"
            "deployment_config:\n  - {model_name: a, deployment_name: a, endpoint: 'https://x'}\n")
    settings = load_settings(write(tmp_path, text), {})
    assert [k.get_secret_value() for k in settings.client_keys] == ["team-key"]


def test_the_go_tools_flags_are_read_from_the_environment_as_viper_does() -> None:
    # The Go tool calls viper.AutomaticEnv(): LISTEN, CORS and API_BASE stand for its
    # -l, -s and the file's api_base. Its users' environments kept them, and the gateway
    # listened on 0.0.0.0:8080 whatever LISTEN said.
    environ = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/",
               "LISTEN": ":9090", "CORS": "true", "API_BASE": "proxy/"}
    settings = load_settings(None, environ)
    assert (settings.listen, settings.cors, settings.api_base) == ("0.0.0.0:9090", True, "/proxy")
    # Ours win over the Go tool's, and a flag over both (viper: flag > env > file).
    ours = {**environ, "AZURE_OPENAI_PROXY_LISTEN": "127.0.0.1:8081"}
    assert load_settings(None, ours).listen == "127.0.0.1:8081"
    assert load_settings(None, ours, {"listen": "127.0.0.1:8082"}).listen == "127.0.0.1:8082"
    assert load_settings({"listen": "127.0.0.1:8083"}, environ).listen == "0.0.0.0:9090"
    # A value set for another program (a shared env file) names the variable.
    with pytest.raises(ConfigError, match=r"^cors \(from the environment's CORS\): "):
        load_settings(None, {**environ, "CORS": "maybe"})
    with pytest.raises(ConfigError, match=r"^api_base \(from the environment's API_BASE\): "):
        load_settings(None, {**environ, "API_BASE": "https://api.example.com"})
    with pytest.raises(ConfigError, match=r"^listen: "):  # the flag's value, not LISTEN's
        load_settings(None, environ, {"listen": "nowhere"})
