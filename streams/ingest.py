"""HTTP ingest for product backends that cannot speak Kafka.

`POST /v1/events/chat` and `/v1/events/feedback` take one bare event (no envelope);
`/v1/events/chat/batch` and `/v1/events/feedback/batch` take `{"events": [...]}`.

- 202 `{"accepted": [event ids]}` only once Kafka acknowledged every event (acks=all).
- 400 when the body is not UTF-8 JSON, 422 with field-level errors when it breaks the
  contract; a batch is all-or-nothing. Every rejected body also goes to the quarantine
  topic with its reason, so nothing is lost.
- 401 without a valid API key, 413 over the size cap.
- 503 with `Retry-After` when Kafka did not acknowledge in `ingest.ack_timeout_s`. A retry
  may then duplicate an event that did land late; consumers deduplicate by `event_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app

from schemas.base import Contract
from schemas.chat import ChatEvent
from schemas.errors import FieldProblem, SchemaValidationError
from schemas.feedback import FeedbackEvent
from schemas.platform import ReasonCode
from streams.errors import DeliveryError, EnqueueTimeoutError
from streams.producer import ChatEventProducer, EventProducer, FeedbackProducer
from streams.quarantine import QuarantineProducer

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class _Rejected(Exception):
    """A request that gets a 4xx answer; carries the response."""

    def __init__(self, status: int, body: dict[str, Any], *, reason: ReasonCode | None) -> None:
        self.status = status
        self.body = body
        self.reason = reason


def create_app(settings: FlywheelSettings) -> FastAPI:
    """The ingest application; producers are created on first request, closed on shutdown."""
    options = settings.ingest
    keys = [k.get_secret_value().encode() for k in options.api_keys]
    producers: dict[str, EventProducer[Any]] = {}
    quarantine = QuarantineProducer(settings.kafka, producer_name=options.producer_name)

    def producer_for(model: type[Contract]) -> EventProducer[Any]:
        kind = model.__name__
        if kind not in producers:
            cls = ChatEventProducer if model is ChatEvent else FeedbackProducer
            producers[kind] = cls(settings.kafka, producer_name=options.producer_name,
                                  config_overrides={"linger.ms": options.linger_ms})
        return producers[kind]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for producer in [*producers.values(), quarantine]:
            try:
                await asyncio.to_thread(producer.close, 10)
            except DeliveryError as e:
                logger.error("ingest: events still undelivered at shutdown: %s", e)

    app = FastAPI(title="Flywheel ingest", version="1", description=__doc__, lifespan=lifespan)
    registry = CollectorRegistry()
    requests_total = Counter("flywheel_ingest_requests", "Ingest requests by route and status.",
                             ["route", "status"], registry=registry)
    events_total = Counter("flywheel_ingest_events", "Events acknowledged by Kafka, by kind.",
                           ["kind"], registry=registry)
    latency_s = Histogram("flywheel_ingest_request_duration_seconds",
                          "Ingest request latency, Kafka acknowledgement included.", ["route"],
                          registry=registry,
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
    app.mount("/metrics", make_asgi_app(registry=registry))

    def authorized(request: Request) -> bool:
        if not keys:
            return True
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return any(hmac.compare_digest(given.encode(), key) for key in keys)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > options.max_body_bytes:
            raise _Rejected(413, _error("(body)", "body too large", "too_long", options),
                            reason=None)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > options.max_body_bytes:
                raise _Rejected(413, _error("(body)", "body too large", "too_long", options),
                                reason=None)
        return bytes(body)

    def parse(model: type[Contract], body: bytes, *, batch: bool) -> list[Contract]:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _Rejected(
                400, {"errors": [_problem("(body)", f"not valid UTF-8 JSON: {e}", "not_json")]},
                reason=ReasonCode.NOT_JSON,
            ) from e
        if not batch:
            items, prefix = [document], ""
        elif isinstance(document, dict) and isinstance(document.get("events"), list):
            items, prefix = document["events"], "events."
        else:
            raise _Rejected(
                422, {"errors": [_problem("events", "expected {\"events\": [...]}", "list_type")]},
                reason=ReasonCode.SCHEMA_VIOLATION,
            )
        if batch and not 1 <= len(items) <= options.max_batch_events:
            raise _Rejected(
                422,
                {"errors": [_problem("events", f"send 1 to {options.max_batch_events} events",
                                     "batch_size")]},
                reason=ReasonCode.SCHEMA_VIOLATION,
            )
        events: list[Contract] = []
        problems: list[FieldProblem] = []
        for index, item in enumerate(items):
            try:
                events.append(model.model_validate_json(json.dumps(item)))
            except ValueError as e:
                error = _as_schema_error(model, e)
                where = f"{prefix}{index}." if batch else ""
                problems.extend(
                    FieldProblem(where + p.field, p.message, p.code) for p in error.problems
                )
        if problems:
            raise _Rejected(
                422, {"errors": [_problem(p.field, p.message, p.code) for p in problems]},
                reason=ReasonCode.SCHEMA_VIOLATION,
            )
        return events

    async def deliver(model: type[Contract], events: list[Contract]) -> list[str]:
        producer = producer_for(model)
        sends: list[Awaitable[Any]] = [producer.send_async(e) for e in events]
        await asyncio.wait_for(asyncio.gather(*sends), timeout=options.ack_timeout_s)
        return [str(e.event_id) for e in events]  # type: ignore[attr-defined]

    async def handle(request: Request, model: type[Contract], *, batch: bool) -> JSONResponse:
        route = request.url.path
        with latency_s.labels(route).time():
            response = await answer(request, model, batch=batch)
        requests_total.labels(route, str(response.status_code)).inc()
        return response

    async def answer(request: Request, model: type[Contract], *, batch: bool) -> JSONResponse:
        if not authorized(request):
            return JSONResponse(
                {"errors": [_problem("(auth)", "missing or wrong API key; send "
                                     "'Authorization: Bearer KEY' (ingest.api_keys)", "auth")]},
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        body = b""
        try:
            body = await read_body(request)
            events = parse(model, body, batch=batch)
            accepted = await deliver(model, events)
        except _Rejected as rejected:
            if rejected.reason is not None:
                await _quarantine(quarantine, request, body, rejected)
            return JSONResponse(rejected.body, status_code=rejected.status)
        except (TimeoutError, DeliveryError, EnqueueTimeoutError) as e:
            logger.warning("ingest: Kafka did not acknowledge in time: %s", e)
            return JSONResponse(
                {"errors": [_problem("(kafka)", "Kafka is unavailable; retry later", "kafka")]},
                status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        events_total.labels(model.__name__).inc(len(accepted))
        return JSONResponse({"accepted": accepted}, status_code=202)

    for path, model in (("/v1/events/chat", ChatEvent), ("/v1/events/feedback", FeedbackEvent)):
        _add_routes(app, path, model, handle)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _add_routes(app: FastAPI, path: str, model: type[Contract], handle: Any) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    single = {"requestBody": {"required": True,
                              "content": {"application/json": {"schema": schema}}}}
    batch = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["events"],
        "properties": {"events": {"type": "array", "items": schema}}}}}}}
    responses: dict[int | str, dict[str, Any]] = {
        202: {"description": "Accepted: Kafka acknowledged every event."},
        400: {"description": "Not UTF-8 JSON."},
        401: {"description": "Missing or wrong API key."},
        413: {"description": "Body over ingest.max_body_bytes."},
        422: {"description": "Field-level contract violations."},
        503: {"description": "Kafka unavailable; retry after Retry-After seconds."},
    }

    async def one(request: Request) -> JSONResponse:
        response: JSONResponse = await handle(request, model, batch=False)
        return response

    async def many(request: Request) -> JSONResponse:
        response: JSONResponse = await handle(request, model, batch=True)
        return response

    name = model.__name__
    app.post(path, status_code=202, openapi_extra=single, responses=responses,
             summary=f"Ingest one {name}", name=f"ingest_{name}")(one)
    app.post(f"{path}/batch", status_code=202, openapi_extra=batch, responses=responses,
             summary=f"Ingest a batch of {name}s", name=f"ingest_{name}_batch")(many)


async def _quarantine(
    quarantine: QuarantineProducer, request: Request, body: bytes, rejected: _Rejected
) -> None:
    assert rejected.reason is not None
    detail = json.dumps(rejected.body)[:4000]
    try:
        await asyncio.to_thread(
            quarantine.send_rejected, body, source=f"ingest:{request.url.path}",
            reasons=[rejected.reason], detail=detail,
        )
    except Exception:  # quarantining must never turn a 4xx into a 500
        logger.exception("ingest: could not quarantine a rejected body")


def _as_schema_error(model: type[Contract], error: ValueError) -> SchemaValidationError:
    from pydantic import ValidationError

    from schemas.envelope import problems_of

    if isinstance(error, ValidationError):
        return SchemaValidationError(model.__name__, problems_of(error))
    return SchemaValidationError(model.__name__, [FieldProblem("(body)", str(error), "value")])


def _problem(field: str, message: str, code: str) -> dict[str, str]:
    return {"field": field, "message": message, "code": code}


def _error(field: str, message: str, code: str, options: Any) -> dict[str, Any]:
    return {"errors": [_problem(field, f"{message}: the cap is {options.max_body_bytes} bytes "
                                       "(ingest.max_body_bytes); split the batch", code)]}

