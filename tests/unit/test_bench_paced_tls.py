"""`bench.paced` over TLS (`python -m bench.streamscale --tls`): the listener's
configuration, the protocol log's counting and the row names it gives."""

from __future__ import annotations

from pathlib import Path

from bench.paced import PacedStream, TlsListen, nginx_conf, protocol_label, protocols

SHAPE = PacedStream(content_frames=5)


def test_the_tls_listener_offers_h2_and_logs_only_its_own_requests(tmp_path: Path) -> None:
    tls = TlsListen(8443, tmp_path / "cert.pem", tmp_path / "key.pem")
    conf = nginx_conf(tmp_path, 8001, SHAPE, tls=tls)
    assert "listen 127.0.0.1:8001 backlog=65535;" in conf
    assert "listen 127.0.0.1:8443 ssl http2 backlog=65535;" in conf
    assert f"ssl_certificate {tmp_path / 'cert.pem'};" in conf
    assert f"ssl_certificate_key {tmp_path / 'key.pem'};" in conf
    assert f"access_log {tmp_path / 'protocols.log'} protocol if=$https;" in conf
    assert conf.count("http2_max_concurrent_streams 20000;") == 1
    both = nginx_conf(tmp_path, 8001, SHAPE, tls=tls, h2_port=8002, workers=2)
    assert "listen 127.0.0.1:8443 ssl http2 backlog=65535 reuseport;" in both
    assert both.count("http2_max_concurrent_streams 20000;") == 1
    assert "ssl" not in nginx_conf(tmp_path, 8001, SHAPE)


def test_protocols_are_counted_from_where_the_last_count_ended(tmp_path: Path) -> None:
    log = tmp_path / "protocols.log"
    assert protocols(log) == ({}, 0)
    log.write_text("HTTP/2.0\nHTTP/2.0\n")
    counts, since = protocols(log)
    assert counts == {"HTTP/2.0": 2}
    with log.open("a") as more:
        more.write("HTTP/1.1\nHTTP/2.0\nHTTP/1.1\n")
    assert protocols(log, since)[0] == {"HTTP/1.1": 2, "HTTP/2.0": 1}


def test_a_row_says_the_protocol_it_saw() -> None:
    assert protocol_label({"HTTP/2.0": 1000}) == "(https, h2 by ALPN)"
    assert protocol_label({"HTTP/1.1": 1000}) == "(https, HTTP/1.1)"
    assert protocol_label({"HTTP/2.0": 3, "HTTP/1.1": 997}) == "(https, HTTP/1.1 x997, h2 by ALPN x3)"
    assert protocol_label({}) == "(https, none seen)"
