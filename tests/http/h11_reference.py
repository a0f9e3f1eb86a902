"""The reference decision for a corpus case: what h11, a sans-I/O HTTP/1.1
parser, makes of the same bytes in the server role.

`h11_decision(data, eof=...)` feeds the bytes to an `h11.Connection`, answers every
complete request with an empty 200 (h11 will not parse the next pipelined request before
the previous one is answered) and reports the requests it saw (method, target, body)
and how the exchange ends:

- `open`: every byte was consumed and the connection may serve another request;
- `close`: a request asked to close (HTTP/1.0 without keep-alive, `Connection: close`);
- `reject`: h11 raised `RemoteProtocolError`; `status` is its `error_status_hint`;
- `incomplete`: h11 waits for more bytes of a request (a head or body still arriving);
- `eof`: the client half-closed in the middle of a request (only with `eof=True`);
- `tunnel`: a CONNECT was answered 200 and the connection became a tunnel.

`load_corpus()` reads `corpus.json` into `Case` values: see that file's `format` entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

__all__ = ["CORPUS", "Case", "Decision", "Expected", "h11_decision", "load_corpus"]

CORPUS = Path(__file__).with_name("corpus.json")
# h11's default bound on a head still arriving (16 KiB), at or below the gateway's limits
# on the target (16 KiB) and the headers (64 KiB): the corpus's oversize cases exceed both.
_MAX_INCOMPLETE = 16 * 1024
_PIECE = 1024  # bytes fed to h11 at a time

Seen = tuple[str, str, bytes]  # method, target, body


@dataclass(frozen=True)
class Decision:
    """The requests a server should hand to its application, and how the exchange ends."""

    requests: tuple[Seen, ...]
    end: str  # open | close | reject | incomplete | eof | tunnel
    status: int | None = None  # reject: the status h11 suggests


@dataclass(frozen=True)
class Expected:
    """A case's RFC 9112 expectation for the gateway: `requests` answered by the
    application in order, then `end`; a rejection's status is one of `statuses`."""

    requests: tuple[Seen, ...]
    end: str  # open | close | reject | eof
    statuses: tuple[int, ...] = ()

    def agrees_with(self, decision: Decision) -> bool:
        """Same requests, same ending; a rejection in the same status class."""
        if decision.requests != self.requests or decision.end != self.end:
            return False
        if self.end != "reject":
            return True
        return decision.status is not None and decision.status // 100 in {
            status // 100 for status in self.statuses}


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    data: bytes
    eof: bool  # the client half-closes after sending `data`
    expected: Expected
    h11_divergence: str | None  # why h11's decision differs from `expected`, if it does


def h11_decision(data: bytes, *, eof: bool = False) -> Decision:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_INCOMPLETE)
    state = _Exchange()
    # Fed as a socket delivers it, in pieces: h11 bounds only a head still arriving.
    for start in range(0, max(len(data), 1), _PIECE):
        conn.receive_data(data[start : start + _PIECE])
        decision = state.run(conn)
        if decision is not None:
            return decision
    if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
        return state.decision("open")
    if not eof:
        return state.decision("incomplete")
    conn.receive_data(b"")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return state.decision("eof")
    return state.decision("open" if isinstance(event, h11.ConnectionClosed) else "incomplete")


class _Exchange:
    """The requests h11 has delivered so far, each answered with an empty 200."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.head: tuple[str, str] = ("", "")
        self.body: list[bytes] = []

    def decision(self, end: str, status: int | None = None) -> Decision:
        return Decision(tuple(self.seen), end, status)

    def run(self, conn: h11.Connection) -> Decision | None:
        """Take every event h11 can make of the bytes so far; a decision if the
        exchange has ended, None while it waits for more."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return self.decision("reject", exc.error_status_hint)
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Request):
                self.head = (event.method.decode("latin-1"), event.target.decode("latin-1"))
                self.body = []
            elif isinstance(event, h11.Data):
                self.body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.seen.append((*self.head, b"".join(self.body)))
                ended = self._answer(conn)
                if ended is not None:
                    return self.decision(ended)
            else:  # ConnectionClosed, PAUSED: not reached before EOF is fed
                return self.decision("close")

    @staticmethod
    def _answer(conn: h11.Connection) -> str | None:
        conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
        if conn.our_state is h11.SWITCHED_PROTOCOL:  # a 2xx to CONNECT: a tunnel now
            return "tunnel"
        conn.send(h11.EndOfMessage())
        if conn.our_state is h11.MUST_CLOSE:
            return "close"
        conn.start_next_cycle()
        return None


def _bytes_of(raw: Any) -> bytes:
    """A case's bytes: a string (each character one byte, latin-1) or a list of such
    strings and `{"repeat": str, "times": n}` pieces, joined."""
    if isinstance(raw, str):
        return raw.encode("latin-1")
    parts = []
    for part in raw:
        if isinstance(part, str):
            parts.append(part.encode("latin-1"))
        else:
            parts.append(part["repeat"].encode("latin-1") * int(part["times"]))
    return b"".join(parts)


def _case(entry: dict[str, Any]) -> Case:
    expect = entry["expect"]
    requests = tuple((method, target, body.encode("latin-1"))
                     for method, target, body in expect.get("requests", []))
    expected = Expected(requests, expect["end"], tuple(expect.get("status", ())))
    if (expected.end == "reject") != bool(expected.statuses):
        raise ValueError(f"{entry['id']}: a rejection, and only one, names its statuses")
    return Case(entry["id"], entry["description"], _bytes_of(entry["raw"]),
                bool(entry.get("eof", False)), expected, entry.get("h11_divergence"))


def load_corpus(path: Path = CORPUS) -> list[Case]:
    cases = [_case(entry) for entry in json.loads(path.read_text())["cases"]]
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("corpus ids must be unique")
    return cases
