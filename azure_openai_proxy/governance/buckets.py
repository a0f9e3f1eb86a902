"""One key's or team's buckets (`Subject`), a refusal (`Refusal`), and the usual plan's
take and settle (`UsualLimits`): what the limiter (governance/ratelimit.py) decides on.
Pure: the clock is passed in or injected, nothing here awaits or does I/O.

`UsualLimits` is the request path's object for the usual plan (one subject with an RPM
and a TPM limit, no parallel limit, in this process alone): made once per version of a
key's limits (`LimitPlan.usual`), it takes (`take(tokens)`: the answer's head lines, or
a `Refusal`) and settles (`settle(reserved, used)`) with no object made per request: a
request's hold is the count of tokens it reserved.

A settlement gives tokens back to a bucket without refilling it first (no clock read,
its stamp left as it is): a bucket is only ever read refilled from its stamp, and for
tokens given back (g > 0) and any refill r that follows, min(min(level + r, cap) + g,
cap) is min(min(level + g, cap) + r, cap): the same level at every later reading (to
rounding: the sums are added in another order). A debt (g < 0, more used than
reserved) is refilled first: a full bucket's refill past its cap would pay it. A debt
stands until refilled, down to a day's allowance (`MOST_DEBT_MINUTES`): floored at one
minute's, Azure's usage of an input the estimate cannot read (a PDF's pages, a file
named by id, `input_audio`) was forgiven past it, and a key of 1,000 tokens a minute
sending a request billed 50,000 every two minutes used 25 times its limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, final

from azure_openai_proxy.governance.model import Limits
from azure_openai_proxy.governance.ratelimitheaders import (
    REQUESTS_LINES,
    TOKENS_LINES,
    bucket_lines,
    bucket_templates,
    limit_headers,
)

__all__ = ["MOST_DEBT_MINUTES", "LimitKind", "Refusal", "Subject", "UsualLimits",
           "changed_level", "limit_of", "longest_refusal", "refusal", "refusal_of"]

LimitKind = Literal["requests", "tokens", "parallel"]
PARALLEL_RETRY_SECONDS = 1.0
# The deepest a TPM bucket goes below zero, in minutes of its limit: a day, so that an
# upstream's absurd usage holds a key off for a day at most.
MOST_DEBT_MINUTES = 1440.0
# A bucket's lines are remembered by its exact level (`memo`: a few levels recur, a full
# bucket's, the usual request sizes), at most `ratelimitheaders.MEMO_SIZE` of them: a
# subject is kept for every key and team in use (a busy one holds 8 lines, ~2 KB).


class Subject:
    """One key's or team's state: its two buckets (`rpm`/`tpm` None: no such limit),
    each a level refilled from its stamp, and its requests in flight."""

    __slots__ = ("checked", "in_flight", "last_lines", "last_rpm", "last_tpm", "limits", "name",
                 "parallel", "row", "rpm", "rpm_level", "rpm_lines", "rpm_memo", "rpm_rate",
                 "rpm_stamp", "rpm_text", "tag", "tpm", "tpm_level", "tpm_lines", "tpm_memo",
                 "tpm_rate", "tpm_stamp", "tpm_text", "version")

    def __init__(self, name: str, row: int | None = None, tag: float = 0.0) -> None:
        self.name = name
        self.row = row  # its row in the shared table; None: this process's alone
        self.tag = tag  # what marks the row as its own (sharedlimits.tag_of)
        self.limits: Limits | None = None
        # The version of the limits it counts by, in the shared table; without a row
        # there, the count of rows set when it last looked for one (sharedrows.py).
        self.version = self.checked = 0.0
        self.rpm: float | None = None
        self.rpm_level = self.rpm_rate = self.rpm_stamp = 0.0
        self.rpm_text = ""
        self.tpm: float | None = None
        self.tpm_level = self.tpm_rate = self.tpm_stamp = 0.0
        self.tpm_text = ""
        self.parallel: int | None = None
        self.in_flight = 0
        self._forget_lines()

    def _forget_lines(self) -> None:
        """Each bucket's head lines by level (`ratelimitheaders.bucket_lines`) and the
        templates they are made from, with its limit's text: made anew when its limits
        change (called once the texts are set)."""
        self.rpm_memo: dict[float, bytes] = {}
        self.tpm_memo: dict[float, bytes] = {}
        self.rpm_lines = bucket_templates(REQUESTS_LINES, self.rpm_text)
        self.tpm_lines = bucket_templates(TOKENS_LINES, self.tpm_text)
        # `UsualLimits.take`'s last answer's lines and the two levels they say (NaN
        # equals nothing: none yet)
        self.last_rpm = self.last_tpm = math.nan
        self.last_lines = b""

    def refill(self, now: float) -> None:
        """Refill up to `now`. A stamp never goes back (a clock read earlier than it, in
        another worker: the time up to it is not refilled twice)."""
        if now > self.rpm_stamp:
            cap = self.rpm
            if cap is not None:
                level = self.rpm_level + (now - self.rpm_stamp) * self.rpm_rate
                self.rpm_level = cap if level > cap else level
            self.rpm_stamp = now
        if now > self.tpm_stamp:
            cap = self.tpm
            if cap is not None:
                level = self.tpm_level + (now - self.tpm_stamp) * self.tpm_rate
                self.tpm_level = cap if level > cap else level
            self.tpm_stamp = now

    def fill(self, now: float) -> None:
        """Fill its buckets (an operator's reset): a minute of requests and tokens again,
        any TPM debt forgiven. Its requests in flight stay counted."""
        self.refill(now)
        if self.rpm is not None:
            self.rpm_level = self.rpm
        if self.tpm is not None:
            self.tpm_level = self.tpm

    def configure(self, limits: Limits, now: float) -> None:
        """Apply `limits` (a changed limit: `changed_level`; a limit removed drops its
        bucket: set again, it starts full)."""
        self.refill(now)
        if limits is self.limits:
            return
        self.limits = limits
        rpm, tpm = limit_of(limits.rpm), limit_of(limits.tpm)
        if rpm is None:
            self.rpm = None
        elif rpm != self.rpm:
            self.rpm_level = rpm if self.rpm is None else changed_level(self.rpm_level,
                                                                       self.rpm, rpm)
            self.rpm, self.rpm_rate, self.rpm_text = rpm, rpm / 60.0, str(int(rpm))
        if tpm is None:
            self.tpm = None
        elif tpm != self.tpm:
            self.tpm_level = tpm if self.tpm is None else changed_level(self.tpm_level,
                                                                       self.tpm, tpm)
            self.tpm, self.tpm_rate, self.tpm_text = tpm, tpm / 60.0, str(int(tpm))
        self.parallel = limits.max_parallel
        self._forget_lines()

    def follow(self, rpm: float, tpm: float, parallel: int | None) -> None:
        """Count by the limits another worker set in the shared row (0 or None: none
        there), for those this worker has too, until its own reload configures them: one
        that has not reloaded yet neither cuts a raised limit's level down to its old
        limit nor admits past a lowered one, and its head lines say the same limit as
        the rest. Its `limits` stay the ones it loaded: a followed cap is the row's, never
        a change of its own (sharedlimits.py `configure_shared` changes a row's limit
        only for a change of what the worker loaded)."""
        if rpm and self.rpm is not None:
            self.rpm, self.rpm_rate, self.rpm_text = rpm, rpm / 60.0, str(int(rpm))
        if tpm and self.tpm is not None:
            self.tpm, self.tpm_rate, self.tpm_text = tpm, tpm / 60.0, str(int(tpm))
        if parallel is not None and self.parallel is not None:
            self.parallel = parallel
        self._forget_lines()

    def follow_row(self, rpm: float, tpm: float, parallel: float, version: float) -> bool:
        """Count by the limits of the shared row, of `version` (sharedrows.py): `rpm` and
        `tpm` (0: none), `parallel` + 1 (0: none), a limit added or removed too; the
        levels of the limits it has then are the row's (`pull`). Its `limits` stay the
        ones it loaded, until its own reload (which finds the row as new). True when a
        limit was added or removed (what a plan made of it depends on)."""
        self.version = version
        parallel_limit = int(parallel) - 1 if parallel else None
        if rpm == (self.rpm or 0.0) and tpm == (self.tpm or 0.0) and parallel_limit == self.parallel:
            return False
        reshaped = ((rpm == 0.0) != (self.rpm is None) or (tpm == 0.0) != (self.tpm is None)
                    or (parallel_limit is None) != (self.parallel is None))
        self.rpm, self.rpm_rate, self.rpm_text = rpm or None, rpm / 60.0, str(int(rpm))
        self.tpm, self.tpm_rate, self.tpm_text = tpm or None, tpm / 60.0, str(int(tpm))
        self.parallel = parallel_limit
        self._forget_lines()
        return reshaped

    @property
    def usual(self) -> bool:
        """Whether it has an RPM and a TPM limit and no parallel one (`UsualLimits`)."""
        return self.rpm is not None and self.tpm is not None and self.parallel is None


def changed_level(level: float, old: float, new: float) -> float:
    """A bucket's level (refilled up to now) once its limit goes from `old` to `new`: a
    raised limit adds what it raised at once (what was used this minute, or owed, stays
    used: a key waiting out its minute or a debt passes as soon as the new limit allows
    it); a lowered one keeps what is left, up to the new minute (what was used is not
    charged again against the lower limit), and a debt down to a day of it at most
    (`MOST_DEBT_MINUTES`: a key owing 50,000 tokens of 1,000 TPM, lowered to 10, owed
    3.5 days of it)."""
    if new > old:
        return level + (new - old)
    return max(min(level, new), -new * MOST_DEBT_MINUTES)


def limit_of(value: int | None) -> float | None:
    return float(value) if value is not None and value > 0 else None


@final  # so that `type(x) is Refusal` narrows both ways (no failed `isinstance`)
@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that must wait: which limit of which subject, for how long, and the
    `x-ratelimit-*` headers to answer with."""

    subject: str
    kind: LimitKind
    retry_after: float  # seconds
    headers: dict[str, str]
    never: bool = False  # the request alone is over the limit: waiting will not help


def refusal(state: Subject, tokens: int, now: float) -> Refusal:
    """Why `state` refuses a request of `tokens`: for good when it is larger than the
    minute; else the longest of the waits its buckets need (its parallel slot, a
    request, the tokens), so that a client that waits what it is told is not refused
    again by another of them (`retry-after-ms`)."""
    found = refusal_of(state, tokens, now)
    assert found is not None, "refusal() of a subject that admits the request"
    return found


def refusal_of(state: Subject, tokens: int, now: float) -> Refusal | None:
    """`refusal`, or None when `state` would admit the request."""
    state.refill(now)
    name = state.name
    cap = state.tpm
    if cap is not None and tokens > cap:
        return Refusal(name, "tokens", 60.0, limit_headers((state,)), never=True)
    wait = 0.0
    kind: LimitKind | None = None
    if state.parallel is not None and state.in_flight >= state.parallel:
        wait, kind = PARALLEL_RETRY_SECONDS, "parallel"
    if state.rpm is not None and state.rpm_level < 1:
        needed = (1 - state.rpm_level) / state.rpm_rate
        if kind is None or needed > wait:
            wait, kind = needed, "requests"
    if cap is not None and tokens and tokens > state.tpm_level:  # a debt refuses no free one
        needed = (tokens - state.tpm_level) / state.tpm_rate
        if kind is None or needed > wait:
            wait, kind = needed, "tokens"
    if kind is None:
        return None
    return Refusal(name, kind, wait, limit_headers((state,)))


def longest_refusal(subjects: tuple[Subject, ...], tokens: int, now: float) -> Refusal:
    """Why `subjects` (a key and its team) refuse a request of `tokens`: one for good
    first, else the one that needs the longest wait, so that waiting it satisfies them
    all (call it only when one refuses)."""
    found: Refusal | None = None
    for state in subjects:
        this = refusal_of(state, tokens, now)
        if this is not None and (found is None or this.never
                                 or (not found.never and this.retry_after > found.retry_after)):
            found = this
            if this.never:
                break
    assert found is not None, "longest_refusal() of subjects that admit the request"
    return found


class UsualLimits:
    """The usual plan's subject (`Subject.usual`, unshared), taken and settled on locals:
    the limiter's `take` and `settle` for it, with no `Admission` (tests/unit/
    test_ratelimit_only.py and test_usuallimits.py hold it to the general loop)."""

    __slots__ = ("clock", "state")

    def __init__(self, state: Subject, clock: Callable[[], float]) -> None:
        self.state = state
        self.clock = clock

    def take(self, tokens: int) -> bytes | Refusal:
        """One request reserving `tokens`: the `x-ratelimit-*` head lines of its answer
        (`limit_lines` of the state after the take), or why it must wait (nothing
        taken). `settle(tokens, ...)` it once it has ended."""
        state, now = self.state, self.clock()
        cap, tpm = state.rpm, state.tpm
        assert cap is not None and tpm is not None
        # Refilled up to `now` (`Subject.refill`, inline; `now - stamp > 0` is `now >
        # stamp`, and reads the stamp once), then checked and taken.
        level, elapsed, full = state.rpm_level, now - state.rpm_stamp, False
        if elapsed > 0.0:
            level += elapsed * state.rpm_rate
            if level > cap:
                level, full = cap, True
            state.rpm_stamp = now
        tokens_level, elapsed = state.tpm_level, now - state.tpm_stamp
        if elapsed > 0.0:
            tokens_level += elapsed * state.tpm_rate
            if tokens_level > tpm:
                tokens_level = tpm
            state.tpm_stamp = now
        if level < 1.0 or (tokens > tokens_level and tokens):  # 0 tokens: no TPM says no
            state.rpm_level, state.tpm_level = level, tokens_level
            return refusal(state, tokens, now)
        state.rpm_level = level = level - 1.0
        state.tpm_level = tokens_level = tokens_level - tokens
        state.in_flight += 1
        # A full requests bucket (the usual key, far from its limits): the last such
        # take's lines when both levels are its (the same request size), by two float
        # compares, not two memo gets (a float's hash each) and a concatenation (~1,400
        # instructions); only then kept, so a bucket never full pays for no store.
        if full and level == state.last_rpm and tokens_level == state.last_tpm:
            return state.last_lines
        # Each bucket's lines by its level: a full bucket's level after a take, or a
        # request size seen before, is a dict hit; else made from integers.
        lines = (state.rpm_memo.get(level) or bucket_lines(
                    state.rpm_memo, state.rpm_lines, cap, level, state.rpm_rate)) + (
                    state.tpm_memo.get(tokens_level) or bucket_lines(
                    state.tpm_memo, state.tpm_lines, tpm, tokens_level, state.tpm_rate))
        if full:
            state.last_rpm, state.last_tpm, state.last_lines = level, tokens_level, lines
        return lines

    def settle(self, reserved: int, used: int | None) -> None:
        """A request that took `reserved` tokens ended: its in-flight slot freed, its
        reservation replaced by `used` (None: unknown, given back). Once per take."""
        state = self.state
        if state.in_flight > 0:
            state.in_flight -= 1
        give_back = reserved - used if used else reserved
        cap = state.tpm
        if give_back > 0 and cap is not None:  # not refilled: module docstring
            level = state.tpm_level + give_back
            state.tpm_level = cap if level > cap else level
        elif give_back and cap is not None:  # a debt: refilled first
            level, now = state.tpm_level, self.clock()
            if now > state.tpm_stamp:
                level += (now - state.tpm_stamp) * state.tpm_rate
                if level > cap:
                    level = cap
                state.tpm_stamp = now
            level += give_back
            floor = -cap * MOST_DEBT_MINUTES
            state.tpm_level = floor if level < floor else level

    def settle_usage(self, reserved: int, usage: Mapping[str, object] | None) -> bool:
        """`settle(reserved, used)` with chat's usage read here (`prompt_tokens` and
        `completion_tokens`, both counts that are not negative: gateway/governed.py
        `used_tokens`' short path), or with None for no usage: True. False, and nothing
        settled, for any other usage: then `settle` with what `used_tokens` reads. The
        same steps as `settle`, in one call for most answers (test_usual_settle.py)."""
        if usage:
            try:  # indexed, not `get`: chat's usage has both counts (else, rarely, raises)
                prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
            except KeyError:
                return False
            # Ints (not bools, not floats): then `|` is negative when either one is.
            if type(prompt) is not int or type(completion) is not int or prompt | completion < 0:
                return False
            give_back = reserved - prompt - completion
        else:
            give_back = reserved
        state = self.state
        if state.in_flight > 0:
            state.in_flight -= 1
        cap = state.tpm
        if give_back > 0 and cap is not None:  # not refilled: module docstring
            level = state.tpm_level + give_back
            state.tpm_level = cap if level > cap else level
        elif give_back and cap is not None:
            level, now = state.tpm_level, self.clock()
            elapsed = now - state.tpm_stamp
            if elapsed > 0.0:
                level += elapsed * state.tpm_rate
                if level > cap:
                    level = cap
                state.tpm_stamp = now
            level += give_back
            floor = -cap * MOST_DEBT_MINUTES
            state.tpm_level = floor if level < floor else level
        return True


def bucket_view(cap: float | None, level: float, rate: float) -> dict[str, object] | None:
    if cap is None:
        return None
    return {"limit": int(cap), "remaining": max(0, math.floor(level)),
            "reset_seconds": round(max(0.0, (cap - level) / rate), 3)}
