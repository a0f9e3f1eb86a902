"""Running the gateway: the event loop, worker processes, signals, reload, and the demo."""
