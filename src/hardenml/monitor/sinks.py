"""Where alerts go: the log, and a webhook that retries.

A sink has one method, `send(payload)`, with the JSON-ready payload of an alert event
(`AlertEvent.payload()`: its ledger payload plus `kind`). `WebhookSink` posts it as JSON
over `hardenml.targets.http_transport` (the stdlib transport the HTTP target uses, so
hardenml needs no HTTP dependency), retrying connection errors, timeouts and 5xx answers
with exponential backoff (`backoff_s * 2**attempt`), and raises `AlertDeliveryError` after
the last try. Header values (which may hold tokens) and the URL's path and query (a Slack
or Teams webhook URL is itself the secret) never appear in a log line or an error: only
the scheme, host and port do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from hardenml.monitor.readings import MonitorError
from hardenml.targets.http_transport import (
    ConnectFailed,
    HttpRequest,
    StdlibTransport,
    TimedOut,
    Transport,
)

log = logging.getLogger(__name__)


class AlertDeliveryError(MonitorError):
    """An alert could not be delivered to a sink; the message says where and why."""


class Sink(Protocol):
    """Receives every alert event's payload."""

    def send(self, payload: dict[str, Any]) -> None: ...


class LogSink:
    """Writes each alert as one log line (and the payload as the record's `alert` extra).

    Raised alerts log at `level` (default WARNING), resolved ones at INFO.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.WARNING) -> None:
        self.logger = logger or logging.getLogger("hardenml.monitor.alerts")
        self.level = level

    def send(self, payload: dict[str, Any]) -> None:
        raised = payload.get("kind") == "alert.raised"
        feature = payload.get("feature")
        self.logger.log(
            self.level if raised else logging.INFO,
            "alert %s %s: rule %s on %s%s (%s)",
            payload.get("alert_id"),
            "raised" if raised else "resolved",
            payload.get("rule"),
            payload.get("detector"),
            "" if feature is None else f" [{feature}]",
            payload.get("detail", ""),
            extra={"alert": payload},
        )


def redacted_url(url: str) -> str:
    """The URL's scheme, host and port only: its path or query may be the secret."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/..." if parts.hostname else "<invalid URL>"


class WebhookSink:
    """POSTs each alert payload as JSON to `url`.

    Arguments: `headers` (added to Content-Type; e.g. an Authorization header), `timeout_s`
    per attempt, `retries` after the first attempt, `backoff_s` before the first retry
    (doubled each time). `transport` and `sleep` default to the stdlib transport and
    `time.sleep`. 2xx is delivered; 4xx is not retried (the receiver refuses this request
    and would refuse it again); 5xx, timeouts and connection errors are retried.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        *,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise MonitorError(
                f"the alert webhook URL must be an http(s) URL, got {redacted_url(url)}"
            )
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise MonitorError("webhook timeout_s must be positive, retries and backoff_s >= 0")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.transport: Transport = transport or StdlibTransport()
        self.sleep = sleep
        self.attempts_sent = 0

    def __repr__(self) -> str:
        return f"WebhookSink({redacted_url(self.url)}, headers={sorted(self.headers)})"

    def send(self, payload: dict[str, Any]) -> None:
        request = HttpRequest(
            method="POST",
            url=self.url,
            body=json.dumps(payload, sort_keys=True).encode(),
            headers={"Content-Type": "application/json", **self.headers},
            timeout=self.timeout_s,
        )
        where = redacted_url(self.url)
        attempts = self.retries + 1
        problem = ""
        for attempt in range(attempts):
            self.attempts_sent += 1
            try:
                response = self.transport.send(request)
            except TimedOut:
                problem = f"gave no answer within {self.timeout_s:g} s"
            except ConnectFailed as exc:
                problem = f"could not be reached ({exc})"
            else:
                if 200 <= response.status < 300:
                    return
                problem = f"answered HTTP {response.status} {response.reason}".rstrip()
                if response.status < 500:
                    raise AlertDeliveryError(
                        f"the alert webhook {where} {problem}; check its URL and the "
                        "credentials in its headers"
                    )
            if attempt + 1 < attempts:
                wait = self.backoff_s * 2**attempt
                log.info("alert webhook %s %s; retrying in %g s", where, problem, wait)
                self.sleep(wait)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise AlertDeliveryError(
            f"the alert webhook {where} {problem}, after {tries} (retries = {self.retries}); "
            "check that the receiver is up and the URL is right"
        )
