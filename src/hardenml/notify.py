"""Incident notifications: one JSON POST to a webhook, with the standard library.

Deliberately minimal: a `WebhookSink` with retries and backoff is being built for the
monitor's alerts (`hardenml.monitor.sinks`), and incidents should move to it once it
lands; until then this posts once and reports failure, and the incident event is in the
ledger either way. The URL of a chat webhook is itself the secret, so no message here
shows more of it than its scheme, host and port.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

WEBHOOK_ENV = "HARDENML_INCIDENT_WEBHOOK"
TIMEOUT_S = 5.0


class NotifyError(Exception):
    """The webhook could not be reached or refused the notification."""


def webhook_url(explicit: str | None) -> str | None:
    """`explicit`, else $HARDENML_INCIDENT_WEBHOOK, else None (no notification)."""
    return explicit or os.environ.get(WEBHOOK_ENV, "").strip() or None


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def post_json(url: str, payload: dict[str, Any], *, timeout_s: float = TIMEOUT_S) -> int:
    """POST `payload` as JSON to `url`; the HTTP status, or `NotifyError`."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise NotifyError(f"the incident webhook must be an http(s) URL, not {_shown(url)}")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, sort_keys=True).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "hardenml"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"the webhook at {_shown(url)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"the webhook at {_shown(url)} is unreachable: {reason}") from None
