"""A key's page of a list (`GET /v1/batches`, `/v1/files`, `/v1/vector_stores`...): Azure
pages a resource's objects of every key together, and the gateway shows a key only its
own (gateway/ownership.py). A page holding none of the key's would end its listing: the
openai SDK stops paging at an empty page whatever `has_more` says, and pages on from the
last item it was shown, which an empty page has not. So a page left empty while Azure
has more is asked again after its last item, on the deployment that answered it (a
cursor is one resource's), up to `MORE_PAGES` times and for `FOLLOW_SECONDS` at most
(a next page that fails, or is not answered in that time, ends the search: the client's
own page was ready); still empty, it keeps `has_more` and its `last_id` is the last
item Azure listed, for a client that pages by it.

Only a list whose every page the key could not otherwise see is asked again; a page
with one of the key's objects is answered at once (the SDK pages on from it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from azure_openai_proxy.auth import Caller
from azure_openai_proxy.errors import GatewayError
from azure_openai_proxy.gateway.limitheaders import LimitedRequest
from azure_openai_proxy.gateway.ownedanswers import filtered, is_list, list_ids
from azure_openai_proxy.gateway.requestbody import RequestBody
from azure_openai_proxy.http.interface import Answer, HttpRequest, Reply
from azure_openai_proxy.observability.record import RequestRecord
from azure_openai_proxy.routing import Pool, Target

__all__ = ["FOLLOW_SECONDS", "MORE_PAGES", "NextPage", "own_page", "pager"]

# Pages asked after the client's own when each held none of the key's objects.
MORE_PAGES = 8
# And for this long at most, all of them: a next page's attempt waits out a 429's
# cooldown within the retry budget (30 s) and a hang up to the read timeout (600 s, the
# openai SDK's own timeout too), which would cost the client the page it asked for.
FOLLOW_SECONDS = 10.0

NextPage = Callable[[str], Awaitable[Reply]]  # the list again, after the id given
Send = Callable[[HttpRequest, Target, Caller, RequestBody, RequestRecord,
                 tuple[Pool, str | None]], Awaitable[Reply]]


class _PageRequest(LimitedRequest):
    """The client's list request with another query (its `after`)."""

    __slots__ = ("_query",)

    def __init__(self, request: HttpRequest, query: str) -> None:
        super().__init__(request, b"")
        self._query = query

    @property
    def query_string(self) -> str:
        return self._query


def pager(send: Send, request: HttpRequest, target: Target, caller: Caller,
          body: RequestBody, record: RequestRecord,
          routed: tuple[Pool, str | None]) -> NextPage | None:
    """How to ask `request`'s list again after an id, or None when it is not a list or
    pages backwards (`before`: its next page is not after the last item)."""
    if not is_list(request.method, target.operation):
        return None
    query = [(name, value) for name, value in parse_qsl(request.query_string,
                                                        keep_blank_values=True)
             if name != "after"]
    if any(name == "before" for name, _ in query):
        return None

    async def after(last: str) -> Reply:
        # The deployment that answered: another resource knows nothing of `last`.
        answered = [d for d in routed[0].deployments if d.endpoint == record.endpoint
                    and d.deployment_name == record.deployment]
        if not answered:
            raise LookupError(last)
        pool = Pool(routed[0].model, (answered[0],), dynamic=routed[0].dynamic,
                    transient=True)
        paged = _PageRequest(request, urlencode([*query, ("after", last)]))
        return await send(paged, target, caller, body, record, (pool, routed[1]))

    return after


async def own_page(owned_of: Callable[[list[str]], Awaitable[set[str]]],
                   listed: tuple[dict[str, Any], list[str]],
                   more: NextPage | None) -> tuple[dict[str, Any], bytes]:
    """A list answer (`listed`: parsed, and the ids it lists) with only the key's objects
    (`owned_of` finds them), parsed and encoded; a page holding none of them while Azure
    has more is followed by the next (`MORE_PAGES` at most). Still none: its `last_id` is
    Azure's last, to page on from."""
    answer, ids = listed
    mine = await owned_of(ids)
    loop = asyncio.get_running_loop()
    until = loop.time() + FOLLOW_SECONDS
    for _ in range(MORE_PAGES if more is not None else 0):
        if mine or not ids or answer.get("has_more") is not True:
            break
        assert more is not None
        following = await _next_page(more, ids[-1], until)
        if following is None:
            break
        answer, ids = following
        mine = await owned_of(ids)
    more_to_come = answer.get("has_more") is True
    return answer, filtered(answer, mine, ids[-1] if ids and more_to_come else None)


async def _next_page(more: NextPage, last: str,
                     until: float) -> tuple[dict[str, Any], list[str]] | None:
    """The page after `last`, parsed, and the ids it lists; None when Azure did not
    answer one (an error, not a list) by `until` (the loop's clock)."""
    try:
        async with asyncio.timeout_at(until):
            reply = await more(last)
    except (LookupError, GatewayError, TimeoutError):  # the client's page is answered
        return None
    if not isinstance(reply, Answer) or reply.status != 200:
        return None
    return list_ids(reply.body)
