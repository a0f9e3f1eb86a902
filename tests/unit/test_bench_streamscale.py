"""The stream-scale benchmark's pure parts (issue 15): the paced upstream's frames in
Azure's order, its nginx configuration, the load generator's counting of what arrives,
and the figures of a row."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import orjson
import pytest

from azure_openai_proxy.sse import SseDecoder
from bench.paced import CONTENT_MARK, PacedStream, _echo, frames, frames_per_stream, nginx_conf
from bench.procs import open_descriptors, runqueue_wait_seconds
from bench.streamload import LoadPlan, LoadShare, _Run, _Stream
from bench.streamscale import (
    ScalePlan,
    ScalePoint,
    paced_at,
    points,
    request_bytes,
    summarize,
)

SHAPE = PacedStream(content_frames=5, interval_ms=75, annotate_every=2)


def _decoded(shape: PacedStream) -> list[bytes]:
    head, steps, tail = frames(shape)
    decoder = SseDecoder()
    events = decoder.feed(head + b"".join(steps) + tail) + decoder.flush()
    return [event.data for event in events if event.data is not None]


def test_the_frames_follow_azures_order() -> None:
    data = _decoded(SHAPE)
    assert data[-1] == b"[DONE]"
    frames_ = [orjson.loads(d) for d in data[:-1]]
    prompt, role, *middle, finish, usage = frames_
    assert prompt["choices"] == [] and prompt["prompt_filter_results"][0]["prompt_index"] == 0
    assert prompt["id"] == "" and prompt["model"] == ""
    assert role["choices"][0]["delta"] == {"content": "", "refusal": None, "role": "assistant"}
    kinds = ["annotation" if "delta" not in f["choices"][0] else "content" for f in middle]
    assert kinds == ["content", "content", "annotation", "content", "content", "annotation",
                     "content"]
    for frame in middle:
        choice = frame["choices"][0]
        assert choice["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
        if "delta" in choice:
            assert choice["delta"]["content"].endswith(CONTENT_MARK.decode())
        else:  # Azure's asynchronous filter: no delta, blank id/model, offsets
            assert (frame["id"], frame["model"], frame["created"]) == ("", "", 0)
            assert set(choice["content_filter_offsets"]) == {"check_offset", "start_offset",
                                                             "end_offset"}
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert frames_per_stream(SHAPE) == len(data) == 12


def test_only_content_frames_hold_the_mark() -> None:
    head, steps, tail = frames(PacedStream(content_frames=50))
    assert CONTENT_MARK not in head + tail
    assert [step.count(CONTENT_MARK) for step in steps] == [1] * 50


def test_the_config_paces_every_content_frame(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path, 8001, SHAPE, nofile=20_000)
    assert conf.count("echo_sleep 0.075;") == 5
    assert conf.count("echo_flush;") == 6  # the head, then each content step
    assert "listen 127.0.0.1:8001 backlog=65535;" in conf
    assert "worker_rlimit_nofile 20000;" in conf and "worker_connections 19936;" in conf
    assert "reuseport" not in conf
    assert "backlog=65535 reuseport;" in nginx_conf(tmp_path, 8001, SHAPE, workers=2)


def test_with_an_h2_port_the_same_streams_are_served_over_h2c(tmp_path: Path) -> None:
    conf = nginx_conf(tmp_path, 8001, SHAPE, h2_port=8002)
    assert "listen 127.0.0.1:8001 backlog=65535;" in conf
    assert "listen 127.0.0.1:8002 http2;" in conf
    assert "http2_max_concurrent_streams 20000;" in conf
    assert "http2" not in nginx_conf(tmp_path, 8001, SHAPE)


def test_an_echo_directive_sends_its_bytes_unchanged() -> None:
    assert _echo(b'data: {"a":"x\\\\y"}\n\n') == "echo -n 'data: {\"a\":\"x\\\\\\\\y\"}\\n\\n';"
    with pytest.raises(ValueError):
        _echo(b"data: $uri\n\n")


def _run(streams: int = 1) -> _Run:
    return _Run(LoadPlan("127.0.0.1", 1, b"", streams, 0.0, 0.075), range(streams))


def test_a_stream_counts_content_frames_and_sees_done_split_across_pieces() -> None:
    head, steps, tail = frames(SHAPE)
    run = _run()
    stream = _Stream(run, begun=100.0)
    body = b"HTTP/1.1 200 OK\r\n\r\n" + head + b"".join(steps) + tail
    cut = body.index(b"[DONE]") + 3
    for piece in (body[:5], body[5:40], body[40:cut], body[cut:]):
        stream.data_received(piece)
    assert stream.ended and run.share.completed == 1 and run.share.content_frames == 5
    assert run.share.errors == run.share.stalled == 0 and run.all_done.is_set()


def test_a_refused_stream_is_an_error_and_an_early_close_too() -> None:
    run = _run(2)
    refused = _Stream(run, begun=0.0)
    refused.data_received(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}")
    cut = _Stream(run, begun=0.0)
    cut.data_received(b"HTTP/1.1 200 OK\r\n\r\ndata: {}\n\n")
    cut.connection_lost(None)
    assert run.share.errors == 2 and run.share.completed == 0
    assert run.share.error_samples[0].startswith("HTTP/1.1 503")
    assert "closed before [DONE]" in run.share.error_samples[1]


def test_lateness_is_the_frames_mean_delay_past_their_schedule() -> None:
    run = _run()
    stream = _Stream(run, begun=10.0)
    stream.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    # Frames k = 1, 2 due at 10.075 and 10.150, each 2 ms late.
    stream.frames, stream.sum_at, stream.first = 2, 10.077 + 10.152, 10.077
    stream.end("completed")
    assert run.share.lateness_s[0] == pytest.approx(0.002)
    assert run.share.ttft_s[0] == pytest.approx(0.077)


def test_a_row_from_a_run() -> None:
    share = LoadShare(streams=4, completed=4, content_frames=200, cpu_s=0.001,
                      ttft_s=[0.08, 0.09, 0.1, 0.2], lateness_s=[0.004] * 4)
    control = LoadShare(streams=1, completed=1, lateness_s=[0.001])
    row = summarize("gateway-1w", 4, share, cpu_s=0.01, upstream_cpu_s=0.002, frames_sent=240,
                    rss_before=50.0, peak=51.0, control=control, runqueue_wait_s=0.5)
    assert row.cpu_us_per_frame == pytest.approx(50.0)
    assert row.loadgen_cpu_us_per_frame == pytest.approx(5.0)
    assert row.upstream_cpu_us_per_frame_sent == pytest.approx(2000 / 240)
    assert row.kb_per_stream == pytest.approx(256.0)
    assert row.added_per_frame_ms == pytest.approx(3.0)
    assert row.ttft_p50_ms == pytest.approx(95.0, abs=5.1)
    assert (row.cpu_s, row.runqueue_wait_s) == (0.01, 0.5)


def test_the_wait_for_a_cpu_is_read_for_every_thread() -> None:
    assert runqueue_wait_seconds(os.getpid()) >= 0.0
    assert runqueue_wait_seconds(2**22 + 1) == 0.0  # no such process: nothing waited


def test_a_request_closes_its_connection() -> None:
    raw = request_bytes("/v1/chat/completions", 9, {"Authorization": "Bearer k"}, b"{}")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:9\r\n")
    assert b"Content-Length: 2" in head and b"Connection: close" in head and body == b"{}"


def test_nginx_accepts_the_generated_config(tmp_path: Path) -> None:
    from bench.paced import have_echo_module

    if not have_echo_module():
        pytest.skip("nginx with the echo module is not installed")
    import subprocess

    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, 8001, SHAPE, as_root=os.geteuid() == 0, h2_port=8002))
    done = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(conf)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def test_an_n_may_carry_its_own_pacing() -> None:
    assert points("1000, 10000:2000:20,5000:500") == (
        1000, ScalePoint(10_000, 2000.0, 20.0), ScalePoint(5000, 500.0))
    for bad in ("10000:x", "0", "10000:1:2:3", "10000:0", "20001:75", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            points(bad)


def test_a_point_paces_its_run_and_the_others_keep_the_plans() -> None:
    plan = ScalePlan((1000,), PacedStream(50, 75.0), 5.0, 1, ("direct",), Path("seed.gz"))
    assert paced_at(plan, 1000) is plan
    slow = paced_at(plan, ScalePoint(10_000, 2000.0, 20.0))
    assert (slow.shape, slow.ramp_s) == (PacedStream(50, 2000.0), 20.0)
    assert paced_at(plan, ScalePoint(10_000, 500.0)).ramp_s == 5.0


def test_open_descriptors_are_counted_per_process(tmp_path: Path) -> None:
    before = open_descriptors([os.getpid()])
    with (tmp_path / "a").open("w"), (tmp_path / "b").open("w"):
        assert open_descriptors([os.getpid()]) == before + 2
    assert open_descriptors([os.getpid(), 2**22 + 1]) == before  # a process gone counts 0
