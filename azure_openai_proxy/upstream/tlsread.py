"""TLS objects whose per-record calls skip `ssl.py`'s Python wrappers.

uvloop's (and asyncio's) SSL protocol reads what arrives record by record:
`SSLObject.read()` once per TLS record and `SSLObject.pending()` around it. Both are
Python methods of `ssl.SSLObject` that call the same-named C method of the `_ssl` object
it wraps, one interpreter frame each. Azure sends each SSE frame of a stream as a record
of its own, so that frame was ~480 instructions of every relayed frame (callgrind, 20,000
records of 440 bytes read one by one: 701.6M -> 692.1M). `DirectSSLObject` is the same
object with `read` and `pending` bound to the C methods themselves (same arguments, same
results: the wrappers only pass them on). `SSLContext.sslobject_class` is the documented
way to have `wrap_bio` make it; it is set only where `ssl.SSLObject` has the `_create`
and `_sslobj` this relies on (CPython since 3.7), else contexts are left as they are."""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["DirectSSLObject", "direct_reads"]


class DirectSSLObject(ssl.SSLObject):
    """`ssl.SSLObject` with `read` and `pending` its `_ssl` object's own methods."""

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        made: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(made, "_sslobj", None)
        if inner is not None:
            vars(made).update(read=inner.read, pending=inner.pending)
        return made


_SUPPORTED = callable(getattr(ssl.SSLObject, "_create", None))


def direct_reads(context: ssl.SSLContext) -> ssl.SSLContext:
    """`context`, its TLS objects `DirectSSLObject`s where this Python allows."""
    if _SUPPORTED and context.sslobject_class is ssl.SSLObject:
        context.sslobject_class = DirectSSLObject
    return context
