"""The HTTP face of the service (FastAPI): parse, call `MonitorService`, answer.

Routes: `POST /v1/predict` (JSON, or one `.npy` array sent as `application/x-npy`),
`POST /v1/ingest`, `GET /v1/alerts`, `GET /v1/status`, `POST /v1/rollback`, `POST
/v1/switch`, `GET /metrics` (Prometheus text), `GET /` (the
status page) and `GET /healthz`. Every route but `/healthz` needs `Authorization: Bearer
<token>`; `BearerAuth` checks it before routing, in constant time, and answers anything
else with a bare 401, so an unauthenticated client learns nothing, not even which routes
exist. Refused requests get a 4xx JSON body `{"error": "..."}` naming the problem.
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from hardenml.monitor.inputs import (
    RequestProblem,
    ingest_records,
    parse_json,
    predict_inputs,
    predict_npy,
)
from hardenml.monitor.page import status_page
from hardenml.monitor.readings import MonitorError
from hardenml.monitor.service import MonitorService

log = logging.getLogger("hardenml.monitor")

OPEN_PATHS = frozenset({"/healthz"})
# `POST /v1/predict` with this content type takes one .npy array instead of JSON.
NPY_CONTENT_TYPE = "application/x-npy"
_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BearerAuth:
    """ASGI middleware: `Authorization: Bearer <token>` on every path but `OPEN_PATHS`,
    compared with `hmac.compare_digest`; otherwise 401 with an empty body."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.expected = b"Bearer " + token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (before it is
    all read, when the client announced its length)."""
    announced = request.headers.get("content-length")
    if announced is not None:
        if not announced.isdigit():
            raise RequestProblem(400, "the Content-Length header is not a number")
        if int(announced) > limit:
            raise RequestProblem(
                413, f"the body has {announced} bytes, more than monitor.max_body_bytes = {limit}"
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestProblem(413, f"the body passes monitor.max_body_bytes = {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given is None:
        return uuid.uuid4().hex
    if not _ID.match(given):
        raise RequestProblem(
            400, "X-Request-Id must be 1-128 characters of letters, digits and _.:@-"
        )
    return given


def _client_id(request: Request) -> str:
    """Who asked: the `X-Client-Id` header, else the peer's address (an attacker need not
    name themself; the query-campaign detector groups queries by this)."""
    given = request.headers.get("x-client-id")
    if given is not None:
        if not _ID.match(given):
            raise RequestProblem(
                400, "X-Client-Id must be 1-128 characters of letters, digits and _.:@-"
            )
        return given
    return request.client.host if request.client is not None else "unknown"


def _reason(body: dict[str, Any]) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500:
        raise RequestProblem(422, "'reason' must be a string of at most 500 characters")
    return reason


def build_app(service: MonitorService, *, token: str) -> ASGIApp:
    """The ASGI app serving `service`, behind the bearer token `token`."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            # uvicorn runs this on SIGTERM/SIGINT after the last request finished: every
            # queued telemetry record is written before the process exits.
            await run_in_threadpool(service.close)

    app = FastAPI(
        title="hardenml monitor",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    metrics = service.metrics

    def answered(route: str, began: float, response: Response) -> Response:
        metrics.requests.labels(route=route, status=str(response.status_code)).inc()
        metrics.request_seconds.labels(route=route).observe(time.perf_counter() - began)
        return response

    async def guarded(
        route: str, request: Request, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        began = time.perf_counter()
        try:
            response = await handle()
        except RequestProblem as problem:
            response = _error(problem.status, problem.message)
        except MonitorError as exc:
            response = _error(409, str(exc))
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("%s %s failed", request.method, request.url.path)
            response = _error(500, f"internal error: {type(exc).__name__}")
        return answered(route, began, response)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        async def handle() -> Response:
            if not service.serving:
                raise RequestProblem(404, "this service ingests records only; POST /v1/ingest")
            raw = await read_body(request, service.max_body_bytes)
            if request.headers.get("content-type", "").startswith(NPY_CONTENT_TYPE):
                rows, batched = predict_npy(raw, service.input_spec, max_rows=service.max_rows)
            else:
                rows, batched = predict_inputs(
                    parse_json(raw), service.input_spec, max_rows=service.max_rows
                )
            # In a worker thread: torch releases the GIL, so the next request's JSON is
            # parsed on one core while this one's forward pass runs on the other.
            answer = await run_in_threadpool(
                service.predict,
                rows,
                request_id=_request_id(request),
                client_id=_client_id(request),
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
            return _json(payload)

        return await guarded("/v1/predict", request, handle)

    @app.post("/v1/ingest")
    async def ingest(request: Request) -> Response:
        async def handle() -> Response:
            body = parse_json(await read_body(request, service.max_body_bytes))
            records = ingest_records(
                body, service.input_spec, len(service.classes), max_rows=service.max_rows
            )
            taken = service.ingest(records, request_id=_request_id(request))
            return _json({"ingested": taken})

        return await guarded("/v1/ingest", request, handle)

    @app.post("/v1/rollback")
    async def rollback(request: Request) -> Response:
        async def handle() -> Response:
            raw = await read_body(request, service.max_body_bytes)
            body = parse_json(raw) if raw.strip() else {}
            event = await run_in_threadpool(service.rollback, reason=_reason(body))
            return _json(event.to_payload())

        return await guarded("/v1/rollback", request, handle)

    @app.post("/v1/switch")
    async def switch(request: Request) -> Response:
        async def handle() -> Response:
            body = parse_json(await read_body(request, service.max_body_bytes))
            share = body.get("candidate_share")
            if (
                not isinstance(share, int | float)
                or isinstance(share, bool)
                or not (math.isfinite(share) and 0.0 <= share <= 1.0)
            ):
                raise RequestProblem(422, "'candidate_share' must be a number in [0, 1]")
            event = await run_in_threadpool(
                service.switch, float(share), reason=_reason(body), rollback=False
            )
            return _json(event.to_payload())

        return await guarded("/v1/switch", request, handle)

    @app.get("/v1/alerts")
    async def alerts(request: Request) -> Response:
        async def handle() -> Response:
            watch = service.watch
            return _json({"active": [], "events": []} if watch is None else watch.alerts_status())

        return await guarded("/v1/alerts", request, handle)

    @app.get("/v1/status")
    async def status(request: Request) -> Response:
        async def handle() -> Response:
            return _json(service.status())

        return await guarded("/v1/status", request, handle)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        async def handle() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

        return await guarded("/metrics", request, handle)

    @app.get("/")
    async def page(request: Request) -> Response:
        async def handle() -> Response:
            return HTMLResponse(status_page(service))

        return await guarded("/", request, handle)

    return BearerAuth(app, token=token)
