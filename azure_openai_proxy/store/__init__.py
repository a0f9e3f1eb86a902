"""Where governance's values are kept (issue 13): SQLite by default (stdlib, WAL, no
set-up), behind small interfaces a later issue gives a PostgreSQL implementation. I/O
lives here and at the gateway's edges; `governance/` stays pure.
"""
