"""What the config file's YAML may say: keys written twice, aliases, `${` kept as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from azure_openai_proxy.config import ConfigError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# PyYAML kept the last value: a second `api_key:` (an old one left below the new one)
# replaced the first without a word, and a pool written twice lost the first's members.
@pytest.mark.parametrize("text, message", [
    ("endpoint: https://east.openai.azure.com/\napi_key: first-s3cret\n"
     "model_mapper: gpt-4o=gpt-4o\napi_key: second-s3cret\n",
     "key 'api_key' is written twice in one mapping (lines 2 and 4)"),
    ("models:\n"
     "  gpt-4o:\n    - {deployment_name: a, endpoint: 'https://a', api_key: s3cret}\n"
     "  gpt-4o-mini:\n    - {deployment_name: m, endpoint: 'https://m', api_key: s3cret}\n"
     "  gpt-4o:\n    - {deployment_name: b, endpoint: 'https://b', api_key: s3cret}\n",
     "a key is written twice in one mapping (lines 2 and 6)"),
])
def test_a_key_written_twice_is_a_config_error_naming_its_lines(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {})
    assert str(caught.value) == f"config file {tmp_path / 'config.yaml'}: {message}"


def test_merge_keys_may_still_be_overridden(tmp_path: Path) -> None:
    # `<<: *shared` then a key of its own is no key written twice.
    text = ("deployment_config:\n"
            "  - &shared {model_name: gpt-4o, deployment_name: a, endpoint: 'https://a', "
            "api_key: k}\n"
            "  - <<: *shared\n"
            "    model_name: gpt-4o-mini\n"
            "    deployment_name: b\n")
    settings = load_settings(write(tmp_path, text), {})
    assert [(d.model_name, d.deployment_name, d.endpoint) for d in settings.deployments] == [
        ("gpt-4o", "a", "https://a"), ("gpt-4o-mini", "b", "https://a")]


@pytest.mark.parametrize("text", ["cors_origins: &a [*a]\n", "upstream: &u {http2: *u}\n"])
def test_an_alias_inside_its_own_anchor_is_a_config_error(tmp_path: Path, text: str) -> None:
    # Walked for ever: a RecursionError's traceback at start, and a reload's failure
    # past 'reload rejected' (the watcher catches only ConfigError).
    with pytest.raises(ConfigError, match="a YAML alias names the list or mapping it is in"):
        load_settings(write(tmp_path, text + "endpoint: https://x\n"), {})


def test_a_dollar_brace_is_kept_as_written_when_doubled(tmp_path: Path) -> None:
    # Every `${` is read as a reference since 5a5a9f6: a password or key holding one
    # could not be written at all (`$${` was `$` and the variable's value).
    text = ("endpoint: https://x\nmodel_mapper: a=a\n"
            "api_key: 'pa$${word}${SUFFIX}'\n"
            "upstream: {http_proxy: 'http://user:p$${x}@proxy:3128'}\n")
    settings = load_settings(write(tmp_path, text), {"SUFFIX": "-1", "word": "no"})
    assert settings.deployments[0].api_key is not None
    assert settings.deployments[0].api_key.get_secret_value() == "pa${word}-1"
    assert settings.upstream.http_proxy == "http://user:p${x}@proxy:3128"


def test_a_dollar_without_a_brace_is_kept(tmp_path: Path) -> None:
    text = "endpoint: https://x\nmodel_mapper: a=a\napi_key: 'pa$$w$rd'\n"
    settings = load_settings(write(tmp_path, text), {})
    assert settings.deployments[0].api_key is not None
    assert settings.deployments[0].api_key.get_secret_value() == "pa$$w$rd"


@pytest.mark.parametrize("text, message", [
    ("endpoint: https://x\nx-shared: 1\n",
     "config file .*: unknown key (not shown, as it is no field name: a secret written "
     "without its `name:`?) at line 2"),
    ("endpoint: https://x\n2024: x\n",
     "config file .*: unknown key (not shown, as it is no field name: a secret written "
     "without its `name:`?) at line 2"),
    ("endpoint: https://x\nserver:\n  head_timeout: 5\n  head_timeout2: 5\n",
     "server: unknown key (not shown, as it is no field name: a secret written without "
     "its `name:`?) at line 4"),
])
def test_an_unknown_key_not_shown_is_told_by_its_line(tmp_path: Path, text: str,
                                                      message: str) -> None:
    # Since c5beadf a misspelt `head_timeout2` or a compose-style `x-shared` was not
    # named (it might have been a secret), and the message said nothing else of where
    # it was: the user searched the whole file.
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), {})
    assert re.fullmatch(re.escape(message).replace(r"\.\*", ".*"), str(caught.value))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_file_with_its_byte_order_mark_loads_as_with_the_go_tool(
        tmp_path: Path, encoding: str) -> None:
    # Windows PowerShell's `>` and Out-File write UTF-16 with a BOM; the Go tool's
    # yaml.v3 reads it. Here it was "not UTF-8 text" (before that, a traceback).
    text = "endpoint: https://east.openai.azure.com/\nmodel_mapper: gpt-4o=gpt-4o # 部署\n"
    data = text.encode(encoding)
    if encoding != "utf-16":  # Python's utf-16 writes its BOM; these do not
        data = ("\ufeff" + text).encode(encoding)
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    settings = load_settings(path, {})
    assert [(d.model_name, d.endpoint) for d in settings.deployments] == [
        ("gpt-4o", "https://east.openai.azure.com")]
