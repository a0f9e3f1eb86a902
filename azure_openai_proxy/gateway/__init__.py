"""The gateway: the request path (`pipeline.py`: authentication, admission, then the
body `requestbody.py`, the pool `poolchoice.py`, the upstream request `translation.py`
and the attempt loop `attempts.py`), failover (`balancer.py`), relaying answers
(`relay.py`), resource affinity, and `app.py`, which serves it all through the HTTP
engine's interface."""
