"""Running the app on uvicorn: in the foreground (`hardenml monitor serve`, where SIGTERM
and SIGINT shut it down gracefully and flush the telemetry), or in a background thread on
a socket bound beforehand (tests and the benchmark, which need the port before serving).
"""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time

import uvicorn

from hardenml.monitor.app import ASGIApp
from hardenml.monitor.readings import MonitorError

# How long a thread that wants the interpreter lock waits for the one holding it before it
# asks for it (CPython's default: 5 ms). The telemetry writer's thread builds records in
# Python; at the default a request could wait up to 5 ms for each hand-over of the lock.
SWITCH_INTERVAL_S = 0.001


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        # A client that keeps its connection open (the HTTP target does) is not cut off
        # between two requests of a scan.
        timeout_keep_alive=30,
        timeout_graceful_shutdown=30,
    )


def serve_forever(app: ASGIApp, *, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn then finishes the requests in flight and runs
    the app's shutdown, which writes every queued telemetry record. This process is the
    service's own, so it also shortens the interpreter's switch interval (`SWITCH_INTERVAL_S`)
    and freezes what was built before serving out of the garbage collector's way."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # What exists now (the models, the config, every imported module) lives as long as
    # the process. Frozen out of the collector's way, it is not walked again by each full
    # collection, which would hold a request that long: with `bench/monitor.py`'s service
    # built (375,000 tracked objects) one took 380-410 ms, and under 0.1 ms once frozen.
    # The children forked at start also keep sharing its pages: the collector no longer
    # writes to them.
    gc.collect()
    gc.freeze()
    server = uvicorn.Server(_config(app, host, port))
    server.run()
    if not server.started:
        raise MonitorError(f"the service could not listen on {host}:{port} (is the port taken?)")


class BackgroundServer:
    """The app on a free port of 127.0.0.1 in a thread; `url` once `start` returned."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(_config(app, self.host, self.port))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise MonitorError("the background server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
