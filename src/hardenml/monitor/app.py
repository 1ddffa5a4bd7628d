"""The HTTP face of the service (FastAPI): parse, call `MonitorService`, answer.

`POST /v1/predict`, the route on every request's path, is a bare ASGI app of its own
(`hardenml.monitor.predict_route`) that `RouteFirst` sends before FastAPI's routing.

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

from hardenml.monitor.inputs import RequestProblem, ingest_records, parse_json
from hardenml.monitor.page import status_page
from hardenml.monitor.predict_route import ROUTE, PredictRoute, announced_length, checked_id
from hardenml.monitor.readings import MonitorError
from hardenml.monitor.service import MonitorService
from hardenml.monitor.writer import TelemetryFull

log = logging.getLogger("hardenml.monitor")

OPEN_PATHS = frozenset({"/healthz"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RouteFirst:
    """ASGI: `POST /v1/predict` to `predict` (a bare ASGI app, `hardenml.monitor.
    predict_route`), everything else to `app`."""

    def __init__(self, app: ASGIApp, predict: ASGIApp) -> None:
        self.app = app
        self.predict = predict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == ROUTE and scope["method"] == "POST":
            await self.predict(scope, receive, send)
        else:
            await self.app(scope, receive, send)


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
    announced_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestProblem(413, f"the body passes monitor.max_body_bytes = {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_id(request: Request) -> str:
    given = checked_id(request.headers.get("x-request-id"), "X-Request-Id")
    return uuid.uuid4().hex if given is None else given


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
        except TelemetryFull as exc:
            response = _error(503, str(exc))
        except MonitorError as exc:
            response = _error(409, str(exc))
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("%s %s failed", request.method, request.url.path)
            response = _error(500, f"internal error: {type(exc).__name__}")
        return answered(route, began, response)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"})

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

    return BearerAuth(RouteFirst(app, PredictRoute(service)), token=token)
