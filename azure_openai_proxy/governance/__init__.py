"""Sharing one Azure subscription (issue 13): virtual keys and teams, their limits and
budgets, prices, and the usage ledger's records. Pure: values and decisions, no I/O; the
storage behind them is `azure_openai_proxy/store/`, the request path that applies them
`gateway/`.
"""
