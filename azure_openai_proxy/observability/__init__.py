"""What is known about requests: the per-request record and its usage (`record.py`), the
access log, and the Prometheus metrics."""
