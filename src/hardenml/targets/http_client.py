"""One JSON endpoint asked over HTTP with the owner's settings: what every network target
shares (`model.kind = "http"` and `"chat"`).

`EndpointClient.post_json` sends one JSON body and returns the parsed JSON answer. It adds
what the model's owner configures: a bearer token read from an environment variable (kept
out of the options, reprs, the ledger, reports and every error message), retries with
exponential backoff for timeouts, broken connections, HTTP 5xx and 429 (which waits as
`Retry-After` says), and a token-bucket rate limit. The network sits behind `Transport`
(see `http_transport`), so the rules here hold whatever moves the bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from hardenml.targets.base import TargetError
from hardenml.targets.http_transport import (
    ConnectFailed,
    HttpRequest,
    HttpResponse,
    StdlibTransport,
    TimedOut,
    Transport,
)

# A server that asks for a longer pause than this fails the scan rather than stalling it.
MAX_RETRY_AFTER_S = 120.0


class EndpointSettings(Protocol):
    """The `[model.options]` every network kind shares (read-only)."""

    @property
    def timeout(self) -> float: ...
    @property
    def retries(self) -> int: ...
    @property
    def backoff(self) -> float: ...
    @property
    def rate_limit(self) -> float | None: ...
    @property
    def headers(self) -> dict[str, str]: ...


class TokenBucket:
    """At most `rate` requests per second, with a bucket of one token: requests are spaced
    at least 1/rate apart, so a limit enforced over any window is respected."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.tokens_ = 1.0
        self.updated_ = clock()

    def take(self) -> None:
        now = self.clock()
        self.tokens_ = min(1.0, self.tokens_ + (now - self.updated_) * self.rate)
        self.updated_ = now
        if self.tokens_ < 1.0:
            self.sleep((1.0 - self.tokens_) / self.rate)
            self.tokens_, self.updated_ = 1.0, self.clock()
        self.tokens_ -= 1.0


class EndpointClient:
    """POSTs JSON to `url` under `settings`; `requests_sent` counts every HTTP request
    (retries included). `hints`: extra advice per HTTP status, appended to its error."""

    def __init__(
        self,
        url: str,
        settings: EndpointSettings,
        *,
        token: str | None = None,
        transport: Transport | None = None,
        hints: Mapping[int, str] | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.transport = transport if transport is not None else StdlibTransport()
        self.hints = dict(hints or {})
        self.requests_sent = 0
        self._token = token or None
        self._limiter = TokenBucket(settings.rate_limit) if settings.rate_limit else None

    def post_json(self, body: Any) -> Any:
        """The parsed JSON answer to `body`, or a `TargetError` naming the URL and the fix."""
        request = HttpRequest(
            "POST",
            self.url,
            json.dumps(body, allow_nan=False).encode(),
            self._headers(),
            self.settings.timeout,
        )
        response = self.send(request)
        try:
            return json.loads(response.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.error(
                f"returned malformed JSON ({exc}): {excerpt(response.body)}; the endpoint "
                "must answer with a JSON object"
            ) from None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers |= self.settings.headers
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def send(self, request: HttpRequest) -> HttpResponse:
        """`request` with retries: timeouts, broken connections, 5xx and 429 are retried
        after `backoff * 2**attempt` seconds (429: after its Retry-After), 4xx are not."""
        settings = self.settings
        attempts = settings.retries + 1
        problem = ""
        for attempt in range(attempts):
            if self._limiter is not None:
                self._limiter.take()
            self.requests_sent += 1
            wait = settings.backoff * 2**attempt
            try:
                response = self.transport.send(request)
            except TimedOut:
                problem = (
                    f"timed out (no answer within model.options.timeout = {settings.timeout:g} s)"
                )
            except ConnectFailed as exc:
                problem = f"could not be reached: {exc}"
            else:
                if 200 <= response.status < 300:
                    return response
                problem = self._status_problem(response)
                if response.status == 429:
                    wait = _retry_after(response, default=wait)
                    if wait > MAX_RETRY_AFTER_S:
                        raise self.error(
                            f"{problem} and asks to wait {wait:g} s (Retry-After); lower "
                            "model.options.rate_limit or scan later"
                        )
                elif response.status < 500:
                    raise self.error(problem)
            if attempt + 1 < attempts:
                time.sleep(wait)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise self.error(f"{problem}, after {tries} (model.options.retries = {settings.retries})")

    def _status_problem(self, response: HttpResponse) -> str:
        status = f"answered HTTP {response.status} {response.reason}".rstrip()
        hint = {
            401: "; check the token in the variable model.options.token_env names",
            403: "; check the token in the variable model.options.token_env names",
            404: "; check model.options.url",
            413: "; lower model.options.batch_size",
            429: "; lower model.options.rate_limit",
        }.get(response.status, "")
        hint = self.hints.get(response.status, hint)
        return f"{status}: {excerpt(response.body)}{hint}"

    def error(self, problem: str) -> TargetError:
        """A `TargetError` naming the URL; the token never appears in it (a server may
        echo the request's headers in an error body)."""
        message = f"POST {self.url} {problem}"
        if self._token:
            message = message.replace(self._token, "***")
        return TargetError(message)


def checked_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host and no credentials, else a `ValueError`
    saying what to give (the options are written to the ledger, a password must not be)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"an http:// or https:// URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise ValueError(
            "a URL without user:password (the options are written to the ledger); "
            "put a token in an environment variable and name it in token_env"
        )
    return url


def checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """`headers` if they carry no Authorization header (the options are written to the
    ledger; the token comes from `token_env`), else a `ValueError`."""
    if any(name.lower() == "authorization" for name in headers):
        raise ValueError(
            "no Authorization header (the options are written to the ledger); put the "
            "token in an environment variable and name it in token_env"
        )
    return headers


def token_from_env(token_env: str | None) -> str | None:
    """The token in the environment variable `token_env` (None when none is named); a
    `TargetError` that says what to export when the variable is unset or empty."""
    if token_env is None:
        return None
    token = os.environ.get(token_env)
    if not token:
        raise TargetError(
            f"model.options.token_env names the environment variable {token_env!r}, "
            f"which is not set (or empty): export {token_env}=<token> before the scan"
        )
    return token


def _retry_after(response: HttpResponse, *, default: float) -> float:
    """Seconds a 429 response asks to wait: its Retry-After (seconds or an HTTP date)."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def excerpt(body: bytes | str, limit: int = 200) -> str:
    """The start of a response body on one line, quoted, for an error message."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
