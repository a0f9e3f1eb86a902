"""Azure OpenAI api-versions: parsing, ordering, and "does this version accept X?".

Dated versions are `YYYY-MM-DD` (GA) or `YYYY-MM-DD-preview`. They order by date, and a
preview sorts before the GA of the same date. The v1 API's `v1`/`preview` (and `latest`)
sort after every dated version: they accept everything.

Availability compares dates, not positions in a list: a feature first shipped in
`2024-09-01-preview` is in every later preview and in any GA dated on or after its GA
date (by default its preview date), so in `2024-10-21` but not in `2024-06-01`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["ApiVersion", "Since", "parse_api_version"]

_V1_NAMES = frozenset({"v1", "preview", "latest"})
_V1_DATE = "9999-12-31"


@dataclass(frozen=True, slots=True)
class Since:
    """When something first shipped: a preview date and, if later, a GA date."""

    preview: str  # YYYY-MM-DD of the first -preview version
    ga: str | None = None  # YYYY-MM-DD of the first GA version; None: same as preview

    def describe(self) -> str:
        ga = f" (GA {self.ga} or later)" if self.ga else ""
        return f"{self.preview}-preview or later{ga}"


@dataclass(frozen=True, slots=True, order=True)
class ApiVersion:
    """A parsed api-version; instances order as Azure released them."""

    date: str
    ga: bool  # False sorts first: a preview comes before the GA of the same date
    raw: str

    @property
    def is_v1(self) -> bool:
        return self.date == _V1_DATE

    def accepts(self, since: Since) -> bool:
        """Whether a request on this version may use what shipped `since`."""
        if self.is_v1:
            return True
        first = since.ga if self.ga and since.ga else since.preview
        return self.date >= first

    def __str__(self) -> str:
        return self.raw


@functools.lru_cache(maxsize=256)  # a handful of versions, parsed on every request
def parse_api_version(raw: str | None) -> ApiVersion:
    """Parse `raw`; None, `v1`, `preview` and `latest` are the v1 API (accepts everything).

    Raises ValueError for anything else that is not `YYYY-MM-DD[-preview]`.
    """
    if raw is None or raw in _V1_NAMES:
        return ApiVersion(date=_V1_DATE, ga=False, raw=raw or "v1")
    date, preview = (raw[:-8], True) if raw.endswith("-preview") else (raw, False)
    if not _is_date(date):
        raise ValueError(f"not an Azure OpenAI api-version: {raw!r}")
    return ApiVersion(date=date, ga=not preview, raw=raw)


def _is_date(text: str) -> bool:
    return (
        len(text) == 10
        and text[4] == text[7] == "-"
        and (text[:4] + text[5:7] + text[8:]).isdigit()
    )
