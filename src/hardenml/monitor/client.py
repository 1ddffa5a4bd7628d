"""Talking to a running service from another process: `hardenml monitor rollback`."""

from __future__ import annotations

import json
from typing import Any

from hardenml.monitor.readings import MonitorError
from hardenml.targets.http_transport import HttpRequest, StdlibTransport, TransportError


def post_json(
    url: str, token: str, body: dict[str, Any], *, timeout: float = 30.0
) -> dict[str, Any]:
    """POST `body` to `url` with the bearer token; the JSON answer, or a `MonitorError`
    that says what the service answered (never the token)."""
    request = HttpRequest(
        "POST",
        url,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        timeout,
    )
    try:
        response = StdlibTransport().send(request)
    except TransportError as exc:
        raise MonitorError(
            f"POST {url}: no answer ({exc}); is `hardenml monitor serve` running?"
        ) from None
    text = response.body.decode("utf-8", "replace")
    if response.status == 401:
        raise MonitorError(f"POST {url}: 401, the token was refused; check monitor.token_env")
    try:
        answer = json.loads(text) if text else {}
    except json.JSONDecodeError:
        answer = {"error": text[:200]}
    if not 200 <= response.status < 300:
        raise MonitorError(f"POST {url}: HTTP {response.status}: {answer.get('error', text[:200])}")
    return dict(answer)
