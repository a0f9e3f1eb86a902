"""`bench.threadcpu gov-noledger`: the governed gateway with the ledger's `add` a no-op
(no record kept, no writer work): the ceiling of any ledger design (a measurement
variant, loaded by the gateway's process through PYTHONPATH; never the gateway's code)."""

from azure_openai_proxy.gateway import ledger

ledger.LedgerWriter.add = lambda self, record: None  # type: ignore[method-assign]
