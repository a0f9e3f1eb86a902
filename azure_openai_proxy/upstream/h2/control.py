"""The connection's SETTINGS and WINDOW_UPDATE frames (RFC 9113 §6.5, §6.9): the server's
limits and the room it gives us to send request bodies in. Rare frames, kept out of
`connection.py`, whose `data_received` is the relay's hot path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from azure_openai_proxy.upstream.h2 import frames as f
from azure_openai_proxy.upstream.h2.frames import ProtocolError

if TYPE_CHECKING:
    from azure_openai_proxy.upstream.h2.connection import _H2Connection

__all__ = ["on_settings", "on_window_update"]

_MAX_WINDOW = 0x7FFFFFFF


def on_settings(conn: _H2Connection, flags: int, payload: bytes) -> None:
    if flags & f.ACK:
        if payload:
            raise ProtocolError("a SETTINGS ack with a payload", f.FRAME_SIZE_ERROR)
        return
    for code, value in f.parse_settings(payload):  # checked there
        if code == f.MAX_CONCURRENT_STREAMS:
            conn.max_streams = value
        elif code == f.INITIAL_WINDOW_SIZE:
            delta, conn.stream_window = value - conn.stream_window, value
            for stream in conn.streams.values():
                stream.send_window += delta
                if stream.send_window > _MAX_WINDOW:
                    raise ProtocolError("a window too large", f.FLOW_CONTROL_ERROR)
        elif code == f.MAX_FRAME_SIZE:
            conn.max_frame = value
        # HEADER_TABLE_SIZE bounds a table our encoder does not keep; the others
        # (ENABLE_PUSH, MAX_HEADER_LIST_SIZE) ask nothing of a client like us.
    conn._reply(f.settings_ack())
    if not conn.settled.done():
        conn.settled.set_result(None)
    conn._wake_blocked()
    conn._changed()  # perhaps room for more streams


def on_window_update(conn: _H2Connection, sid: int, payload: bytes) -> None:
    if len(payload) != 4:
        raise ProtocolError("a WINDOW_UPDATE's size", f.FRAME_SIZE_ERROR)
    increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
    if sid == 0:
        if increment == 0:
            raise ProtocolError("a zero WINDOW_UPDATE")
        conn.send_window += increment
        if conn.send_window > _MAX_WINDOW:
            raise ProtocolError("a window too large", f.FLOW_CONTROL_ERROR)
        conn._wake_blocked()
        return
    stream = conn.streams.get(sid)
    if stream is not None:
        if increment == 0 or stream.send_window + increment > _MAX_WINDOW:
            conn._reset(stream, conn._failure(stream, "a bad WINDOW_UPDATE"),
                        f.FLOW_CONTROL_ERROR if increment else f.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        stream.heard = True  # an upload paced by the window is making progress
        if stream in conn.blocked:
            stream.wake()
