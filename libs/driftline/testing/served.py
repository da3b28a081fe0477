"""An ASGI app on a real port for tests: uvicorn in a daemon thread on a free 127.0.0.1 port."""

from __future__ import annotations

import socket
import threading

import httpx
import uvicorn


class ServedApp:
    """Serve ``app`` on a free loopback port until :meth:`close`.

    The constructor returns once ``ready_path`` answers 200 (the test fails
    after ``timeout_s`` otherwise); ``url`` is where it listens.
    """

    def __init__(self, app, *, ready_path: str = "/healthz", timeout_s: float = 30.0):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        with httpx.Client(base_url=self.url, timeout=1) as probe:
            for _ in range(int(timeout_s * 10)):
                try:
                    if probe.get(ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    self.thread.join(0.1)
        raise AssertionError(f"{self.url} did not come up within {timeout_s:g}s")

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
