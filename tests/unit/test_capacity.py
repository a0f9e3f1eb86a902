"""runtime/capacity.py's pure parts: the kernel's backlog cap read (or missing), the
backlog asked for, the descriptors a connection cap needs and the warning."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from azure_openai_proxy.config import load_settings
from azure_openai_proxy.runtime.capacity import (
    FD_MARGIN,
    connection_cap,
    fd_warning,
    fds_needed,
    listen_backlog,
    somaxconn,
)


@pytest.mark.parametrize(("text", "expected"), [("4096\n", 4096), ("", None), ("many", None),
                                                ("0", None)])
def test_somaxconn_is_read_and_a_bad_file_is_no_cap(tmp_path: Path, text: str,
                                                     expected: int | None) -> None:
    path = tmp_path / "somaxconn"
    path.write_text(text)
    assert somaxconn(path) == expected


def test_a_missing_somaxconn_is_no_cap(tmp_path: Path) -> None:
    assert somaxconn(tmp_path / "absent") is None


@pytest.mark.parametrize(("configured", "kernel", "expected"), [
    (65_535, 4096, 4096), (128, 4096, 128), (65_535, None, 65_535)])
def test_the_backlog_is_the_configured_one_bounded_by_the_kernel(
        configured: int, kernel: int | None, expected: int) -> None:
    assert listen_backlog(configured, kernel) == expected


def test_the_default_backlog_is_high() -> None:
    assert load_settings({"endpoint": "https://r.openai.azure.com/"}, {}).server.backlog == 65_535


def test_two_descriptors_a_connection_and_a_margin() -> None:
    assert fds_needed(10_000) == 20_000 + FD_MARGIN


def test_the_warning_names_the_limit_and_the_cap() -> None:
    warning = fd_warning(1024, 10_000)
    assert warning is not None
    assert "1024" in warning and "server.max_connections (10000" in warning
    assert fd_warning(fds_needed(10_000), 10_000) is None
    assert fd_warning(fds_needed(10_000) - 1, 10_000) is not None
    assert fd_warning(resource.RLIM_INFINITY, 10_000) is None


def test_the_cap_is_what_the_descriptors_hold() -> None:
    assert connection_cap(10_000, 20_000) == (20_000 - FD_MARGIN) // 2
    assert connection_cap(100, 20_000) == 100
    assert connection_cap(10_000, resource.RLIM_INFINITY) == 10_000
    assert connection_cap(10_000, 10) == 1  # never 0: one connection still gets served


def test_with_an_http2_upstream_a_stream_holds_one_descriptor() -> None:
    from azure_openai_proxy.runtime.capacity import fds_per_stream
    from azure_openai_proxy.settings import UpstreamSettings

    assert fds_per_stream(UpstreamSettings()) == 2
    per_stream = fds_per_stream(UpstreamSettings(http2=True))
    assert per_stream == 1
    # The hard limit here (20,000) holds 10,000 streams over HTTP/2, not over HTTP/1.1.
    assert connection_cap(10_000, 20_000, per_stream) == 10_000
    assert fd_warning(20_000, 10_000, per_stream) is None
    assert connection_cap(10_000, 20_000) < 10_000
    assert "one per stream" in (fd_warning(5_000, 10_000, per_stream) or "")
