"""One HTTP exchange, behind a one-method protocol: `Transport.send(request) -> response`.

The idea is httpx's transport (`BaseTransport.handle_request`): the HTTP target builds
requests and reads responses, and the transport only moves bytes. Retries, backoff, the
rate limit and every error message that names a model option live in the target; the
transport raises `TransportError` (`TimedOut`, `ConnectFailed`) for what never produced
a response, and returns every response it got, whatever its status.

`StdlibTransport` is built on `http.client`, so hardenml needs no HTTP dependency. It
keeps one connection per host open between requests (HTTP/1.1 keep-alive): a scan sends
thousands of small requests, and a TLS handshake per request would dominate them. It does
not read proxy settings from the environment.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class HttpRequest:
    """A request to send. `timeout`: seconds a connect or a read may wait."""

    method: str
    url: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0


@dataclass(frozen=True)
class HttpResponse:
    """A response as received. `headers` keys are lower case."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


class TransportError(Exception):
    """No response came back; the message says what happened on the wire."""


class TimedOut(TransportError):
    """Connecting or reading took longer than the request's timeout."""


class ConnectFailed(TransportError):
    """The connection could not be made or broke before a response was read."""


class Transport(Protocol):
    """Sends one request and returns the response, or raises `TransportError`."""

    def send(self, request: HttpRequest) -> HttpResponse: ...


# A kept-alive connection the server has closed in the meantime fails on first use with
# one of these; the request is then sent once more on a fresh connection (a prediction
# request is idempotent, so a duplicate is harmless).
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class StdlibTransport:
    """`Transport` over `http.client`, reusing one connection per (scheme, host, port).

    Safe to share between threads (one request at a time per transport).
    """

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str, int | None], http.client.HTTPConnection] = {}
        self._lock = threading.Lock()

    def send(self, request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectFailed(f"not an http(s) URL: {request.url}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.hostname, parts.port)
        with self._lock:
            try:
                return self._exchange(key, path, request)
            except _STALE_CONNECTION:
                pass  # a kept-alive connection the server had closed: once more, afresh
            try:
                return self._exchange(key, path, request)
            except _STALE_CONNECTION as exc:
                raise ConnectFailed(f"the connection broke ({type(exc).__name__})") from None

    def _exchange(
        self, key: tuple[str, str, int | None], path: str, request: HttpRequest
    ) -> HttpResponse:
        connection = self._connection(key, request.timeout)
        try:
            connection.request(
                request.method, path, body=request.body, headers=dict(request.headers)
            )
            raw = connection.getresponse()
            body = raw.read()
        except TimeoutError:
            self._close(key)
            raise TimedOut(f"no response within {request.timeout:g} s") from None
        except _STALE_CONNECTION:
            self._close(key)
            raise
        except ConnectionRefusedError:
            self._close(key)
            raise ConnectFailed("connection refused") from None
        except ssl.SSLError as exc:
            self._close(key)
            raise ConnectFailed(f"TLS failed: {exc.reason or exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            self._close(key)
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        if raw.will_close:
            self._close(key)
        headers = {name.lower(): value for name, value in raw.getheaders()}
        return HttpResponse(raw.status, body, headers, raw.reason)

    def close(self) -> None:
        with self._lock:
            for key in list(self._connections):
                self._close(key)

    def _connection(
        self, key: tuple[str, str, int | None], timeout: float
    ) -> http.client.HTTPConnection:
        connection = self._connections.get(key)
        if connection is None:
            scheme, host, port = key
            if scheme == "https":
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._connections[key] = connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _close(self, key: tuple[str, str, int | None]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()
