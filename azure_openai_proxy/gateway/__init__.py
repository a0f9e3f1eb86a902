"""The gateway: the request path (`pipeline.py`), failover (`balancer.py`), relaying
answers (`relay.py`), resource affinity, and `app.py`, which serves it all through the
HTTP engine's interface."""
