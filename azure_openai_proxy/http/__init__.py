"""The HTTP engine: serves HTTP/1.1 to clients and hands each request to one handler.

It knows nothing of the gateway: `interface.py` is the whole contract between the two
(a request, its body, an answer or a stream of bytes). A test enforces that nothing here
imports the gateway."""
