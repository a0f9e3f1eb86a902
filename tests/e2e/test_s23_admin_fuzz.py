"""Session 23's adversarial audit, as a guard: hypothesis throws key and team bodies at a
served gateway's admin API (every field, of every JSON type, huge and negative numbers,
control characters, deep values) and checks what the audit checked by hand: never a
5xx, an OpenAI-shaped error for every refusal, strict JSON (no NaN) in every answer,
and the lists still readable after each write (a stored value no answer can show was a
500 for every list in session 16); and odd GET /admin/usage queries likewise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Emulator
from tests.e2e.test_admin_api import governed_admin

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
           | st.sampled_from(["30d", "0d", "never", "daily", "none", "2026-01-01", "gpt-4o",
                              "*", "", " , ", "1e308", "\x1b[2J", "a%20b", "9" * 40 + "d"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
FIELDS = st.sampled_from(["name", "team", "team_id", "models", "expires", "expires_at",
                          "blocked", "metadata", "rpm", "tpm", "max_parallel", "budget_usd",
                          "budget_period", "soft_budget_usd", "grace_seconds", "colour"])
TARGETS = st.sampled_from([("POST", "/admin/keys"), ("POST", "/admin/teams"),
                           ("PATCH", "/admin/keys/{key}"), ("PATCH", "/admin/teams/{team}"),
                           ("POST", "/admin/keys/{key}/rotate")])


def _strict(answer: httpx.Response) -> Any:
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    return orjson.loads(answer.content)  # strict JSON: NaN or Infinity would raise


def test_fuzzed_admin_bodies_never_break_the_api(
        tmp_path: Path, emulator: Emulator, start_gateway: Any) -> None:
    with governed_admin(tmp_path, emulator.url, start_gateway) as (_url, admin):
        ids = {"key": admin.post("/admin/keys", json={"name": "base"}).json()["id"],
               "team": admin.post("/admin/teams", json={"name": "base"}).json()["id"]}

        @settings(max_examples=120, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(target=TARGETS, body=st.dictionaries(FIELDS, VALUES, max_size=5))
        def once(target: tuple[str, str], body: dict[str, Any]) -> None:
            method, path = target
            answer = admin.request(method, path.format(**ids), json=body)
            data = _strict(answer)
            if answer.status_code >= 400:
                assert set(data) == {"error"} and data["error"]["message"]
            for listing in ("/admin/keys", "/admin/teams", "/admin/limits"):
                assert admin.get(listing).status_code == 200
                _strict(admin.get(listing))

        once()

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(query=st.dictionaries(
            st.sampled_from(["since", "until", "by", "format"]),
            st.text(max_size=8) | st.sampled_from(["nan", "inf", "-1e400", "7d", "key", "csv",
                                                   "9" * 400 + "d", "2026-13-01"]),
            max_size=4))
        @example(query={"since": "nan"})
        @example(query={"until": "9" * 400 + "d"})
        def usage(query: dict[str, str]) -> None:
            answer = admin.get("/admin/usage", params=query)
            if answer.headers["content-type"].startswith("text/csv"):
                assert answer.status_code == 200
            else:
                _strict(answer)  # main: "since": NaN, or a 500

        usage()
