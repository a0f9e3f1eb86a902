"""A static client key (no database: the tokens metric is its only count) starts a
background Responses stream and leaves it at its first output text; Azure finishes and
the client reads the response. The metric counts Azure's usage at least once, and the
prompt once: the `POST`'s estimate (its prompt, what was relayed), then the read's
rest (gateway/rereads.py).

Here the relay's task writes the left stream's estimate before the `POST`'s handler
ends, so this passes on branch acct too: it guards the end-to-end count. The case of an
estimate written after the handler ended (after the metric counted the record), which
acct's read left out though nothing had counted it, is pinned by
tests/unit/test_acct_cut_estimates.py (`..._counted_when_the_post_ended`)."""

from __future__ import annotations

from collections.abc import Callable

from azure_openai_proxy.settings import Settings
from tests.e2e.conftest import CLIENT_KEY, Emulator, gateway_settings
from tests.e2e.test_acct_background_cut import left_stream, slow_emulator  # noqa: F401
from tests.e2e.test_ledger import sdk
from tests.e2e.test_metrics import P, scrape, value
from tests.support import ServerThread
from tests.waiting import until


def test_a_left_background_streams_usage_is_counted_once_in_the_tokens_metric(
        slow_emulator: Emulator,  # noqa: F811
        start_gateway: Callable[[Settings], ServerThread]) -> None:
    gateway = start_gateway(gateway_settings(slow_emulator.url))
    response_id = left_stream(gateway, CLIENT_KEY)
    until(lambda: value(scrape(gateway.url), P + "requests_total", route="responses") >= 1,
          timeout=20, message="the left stream's request never counted")
    client = sdk(gateway, CLIENT_KEY)
    reads = [client.responses.retrieve(response_id)]
    until(lambda: reads.append(client.responses.retrieve(response_id))
          or reads[-1].status == "completed",
          timeout=60, message="the background response never completed")
    usage = reads[-1].usage
    assert usage is not None
    until(lambda: value(scrape(gateway.url), P + "requests_total", route="responses")
          >= 1 + len(reads), timeout=20, message="the reads never counted")
    samples = scrape(gateway.url)
    counted_in = value(samples, P + "tokens_total", direction="in")
    counted_out = value(samples, P + "tokens_total", direction="out")
    assert counted_out >= usage.output_tokens, (counted_out, usage)
    assert usage.input_tokens <= counted_in < 2 * usage.input_tokens, (counted_in, usage)
