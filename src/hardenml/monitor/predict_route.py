"""`POST /v1/predict` as a bare ASGI app: the one route on every request's path.

Why not a FastAPI route like the others: on a batch of 32 MNIST images the model's
forward pass takes about 5 ms, and Starlette's middleware stack, FastAPI's request
handling and the hop to a worker thread and back added about as much again at the 99th
percentile (`bench/monitor.py`). This route reads the body from the ASGI `receive`
channel itself (refusing it with 413 as soon as it passes `monitor.max_body_bytes`),
parses it (`hardenml.monitor.inputs`), and calls `MonitorService.predict` in the event
loop's thread: the service answers one request at a time on one torch thread either way,
and a thread hop per request buys no parallelism on a CPU the forward pass keeps busy
while it costs every request two hand-overs of the interpreter lock. Its answers, errors
and metrics are those of the other routes (`hardenml.monitor.app`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from hardenml.monitor.inputs import RequestProblem, parse_json, predict_inputs, predict_npy
from hardenml.monitor.readings import MonitorError
from hardenml.monitor.service import MonitorService
from hardenml.monitor.telemetry import PendingRecords
from hardenml.monitor.writer import TelemetryFull

log = logging.getLogger("hardenml.monitor")

ROUTE = "/v1/predict"
# `POST /v1/predict` with this content type takes one .npy array instead of JSON.
NPY_CONTENT_TYPE = "application/x-npy"
_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before it sent the whole body: there is no one to answer."""


def checked_id(value: str | None, header: str) -> str | None:
    """`value` of the header `header` when it is a valid id (None when absent)."""
    if value is not None and not _ID.match(value):
        raise RequestProblem(400, f"{header} must be 1-128 characters of letters, digits and _.:@-")
    return value


def announced_length(value: str | None, limit: int) -> None:
    """Refuse a body whose `Content-Length` is not a number or passes `limit` bytes."""
    if value is None:
        return
    if not value.isdigit():
        raise RequestProblem(400, "the Content-Length header is not a number")
    if int(value) > limit:
        raise RequestProblem(
            413, f"the body has {value} bytes, more than monitor.max_body_bytes = {limit}"
        )


async def receive_body(receive: Receive, limit: int) -> bytes:
    """The whole request body from the ASGI channel, refused with 413 past `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestProblem(413, f"the body passes monitor.max_body_bytes = {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class PredictRoute:
    """The ASGI app answering `POST /v1/predict` for `service` (auth is checked before)."""

    def __init__(self, service: MonitorService) -> None:
        self.service = service
        self.metrics = service.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        foreground = self.service.foreground
        foreground.enter()
        try:
            status = await self._respond(scope, receive, send, headers)
        except ClientGone:
            return
        finally:
            foreground.leave()
        self.metrics.requests.labels(route=ROUTE, status=str(status)).inc()
        self.metrics.request_seconds.labels(route=ROUTE).observe(time.perf_counter() - began)

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes]
    ) -> int:
        """Answer the request; returns the status it sent."""
        pending: PendingRecords | None = None
        timing: list[tuple[bytes, bytes]] = []
        try:
            body, pending, model_seconds = self._answer(
                scope, headers, await self._body(receive, headers)
            )
            status = 200
            timing = [(b"server-timing", server_timing(model_seconds))]
        except RequestProblem as problem:
            status, body = problem.status, orjson.dumps({"error": problem.message})
        except TelemetryFull as exc:
            status, body = 503, orjson.dumps({"error": str(exc)})
        except MonitorError as exc:
            status, body = 409, orjson.dumps({"error": str(exc)})
        except ClientGone:
            raise
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("POST %s failed", ROUTE)
            status, body = 500, orjson.dumps({"error": f"internal error: {type(exc).__name__}"})
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *timing,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            # After the answer is on its way (or the client is gone: the model was still
            # queried), and before the request counts as done, which a shutdown waits for.
            if pending is not None:
                self.service.record(pending)
        return status

    async def _body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        if not self.service.serving:
            raise RequestProblem(404, "this service ingests records only; POST /v1/ingest")
        limit = self.service.max_body_bytes
        length = headers.get(b"content-length")
        announced_length(None if length is None else length.decode("latin-1"), limit)
        return await receive_body(receive, limit)

    def _answer(
        self, scope: Scope, headers: dict[bytes, bytes], raw: bytes
    ) -> tuple[bytes, PendingRecords, float]:
        """The response body, the telemetry to record once it is sent, and the seconds the
        model's forward pass took."""
        service = self.service
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if content_type.startswith(NPY_CONTENT_TYPE):
            rows, batched = predict_npy(raw, service.input_spec, max_rows=service.max_rows)
        else:
            rows, batched = predict_inputs(
                parse_json(raw), service.input_spec, max_rows=service.max_rows
            )
        request_id = checked_id(_header(headers, b"x-request-id"), "X-Request-Id")
        # Who asked: the header, else the peer's address (an attacker need not name
        # themself; the query-campaign detector groups queries by this).
        client_id = checked_id(_header(headers, b"x-client-id"), "X-Client-Id")
        if client_id is None:
            client = scope.get("client")
            client_id = str(client[0]) if client else "unknown"
        answer, pending = service.infer(
            rows, request_id=request_id or uuid.uuid4().hex, client_id=client_id
        )
        names = [service.classes[i] for i in answer.class_indices]
        if batched:
            payload: dict[str, Any] = {
                "labels": names,
                "class_indices": answer.class_indices,
                "confidence": answer.confidences,
                "scores": answer.scores,
            }
        else:
            payload = {
                "class": names[0],
                "class_index": answer.class_indices[0],
                "confidence": answer.confidences[0],
                "scores": answer.scores[0],
            }
        payload |= {"model_version": answer.model_version, "request_id": answer.request_id}
        return orjson.dumps(payload), pending, answer.model_seconds


def server_timing(model_seconds: float) -> bytes:
    """The `Server-Timing` header (W3C Server Timing) of an answer: how long the model
    call took (its forward pass and the softmax), in milliseconds. A client subtracts it
    from the round trip to see what the service added (`bench/monitor.py` does)."""
    return f"model;dur={model_seconds * 1000.0:.3f}".encode()


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")
