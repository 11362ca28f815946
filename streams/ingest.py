"""HTTP ingest for product backends that cannot speak Kafka.

`POST /v1/events/chat` and `/v1/events/feedback` take one bare event (no envelope);
`/v1/events/chat/batch` and `/v1/events/feedback/batch` take `{"events": [...]}`.
Authorization, the size cap and JSON decoding follow the ingress rules shared with the
gateway (`streams.ingress`).

- 202 `{"accepted": [event ids]}` only once Kafka acknowledged every event (acks=all).
- 400 when the body is empty or not JSON Flywheel can store: not UTF-8, a lone surrogate,
  nesting over 200 levels, an integer over 4,300 digits, NaN or Infinity.
- 422 with field-level errors when it breaks the contract (a timestamp outside
  2000-01-01..2099-12-31, a control character in a text or comment...); a batch is
  all-or-nothing.
- 401 without a valid API key (`Authorization: Bearer KEY` or `X-API-Key: KEY`; either
  one valid is enough), 413 over `ingest.max_body_bytes`.
- Every refused body (400, 413, 422) goes to the quarantine topic with its reason, so
  nothing is lost; the answer's `quarantine_id` is its `record_id` in the `quarantine`
  table. A body over 512 KiB keeps its first 512 KiB, its size and its SHA-256.
- 503 with `Retry-After` when Kafka did not acknowledge in `ingest.ack_timeout_s`. The
  events may still land late. Retrying is safe when the retry carries the same
  `event_id`s (the answer lists them as `event_ids`, generated ones included): the
  warehouse keeps one row per event id (`chat_turns FINAL`, `feedback FINAL`).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from streams.errors import DeliveryError, EnqueueTimeoutError, IngressRefusedError
from streams.ingress import ApiKeys, RefusalCounter, decode_json, read_body
from streams.producer import ChatEventProducer, EventProducer, FeedbackProducer
from streams.quarantine import QuarantineProducer

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class _Undelivered(Exception):
    """Kafka did not acknowledge in time; carries the ids the client should retry with."""

    def __init__(self, event_ids: list[str]) -> None:
        self.event_ids = event_ids


def create_app(settings: FlywheelSettings) -> FastAPI:
    """The ingest application; producers are created on first request, closed on shutdown."""
    options = settings.ingest
    keys = ApiKeys(options.api_keys)
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
    refusals = RefusalCounter(registry, service="ingest")
    app.mount("/metrics", make_asgi_app(registry=registry))

    def parse(model: type[Contract], body: bytes, *, batch: bool) -> list[Contract]:
        document = decode_json(body)
        if not batch:
            items, prefix = [document], ""
        elif isinstance(document, dict) and isinstance(document.get("events"), list):
            items, prefix = document["events"], "events."
        else:
            raise _refused(422, "events", 'expected {"events": [...]}', "list_type")
        if batch and not 1 <= len(items) <= options.max_batch_events:
            raise _refused(422, "events", f"send 1 to {options.max_batch_events} events",
                           "batch_size")
        events: list[Contract] = []
        problems: list[FieldProblem] = []
        for index, item in enumerate(items):
            try:
                # The contract is strict (no "1" for 1): validate the item as JSON again.
                raw = body if not batch else json.dumps(item)
                events.append(model.model_validate_json(raw))
            except ValueError as e:
                error = _as_schema_error(model, e)
                where = f"{prefix}{index}." if batch else ""
                problems.extend(
                    FieldProblem(where + p.field, p.message, p.code) for p in error.problems
                )
        if problems:
            raise IngressRefusedError(422, problems, reason=ReasonCode.SCHEMA_VIOLATION)
        return events

    async def deliver(model: type[Contract], events: list[Contract]) -> list[str]:
        event_ids = [str(e.event_id) for e in events]  # type: ignore[attr-defined]
        producer = producer_for(model)
        try:
            sends: list[Awaitable[Any]] = [producer.send_async(e) for e in events]
            await asyncio.wait_for(asyncio.gather(*sends), timeout=options.ack_timeout_s)
        except (TimeoutError, DeliveryError, EnqueueTimeoutError) as e:
            logger.warning("ingest: Kafka did not acknowledge %d events in time: %s",
                           len(events), e)
            raise _Undelivered(event_ids) from e
        return event_ids

    async def handle(request: Request, model: type[Contract], *, batch: bool) -> JSONResponse:
        route = request.url.path
        with latency_s.labels(route).time():
            response = await answer(request, model, batch=batch)
        requests_total.labels(route, str(response.status_code)).inc()
        return response

    async def answer(request: Request, model: type[Contract], *, batch: bool) -> JSONResponse:
        if not keys.authorized(request):
            refusals.count(request.url.path, 401, "auth")
            return JSONResponse(
                {"errors": [_problem("(auth)", "missing or wrong API key; send "
                                     "'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
                                     "(ingest.api_keys)", "auth")]},
                status_code=401, headers={"WWW-Authenticate": "Bearer"},
            )
        body = b""
        try:
            body = await read_body(request, max_body_bytes=options.max_body_bytes,
                                   setting="ingest.max_body_bytes")
            events = parse(model, body, batch=batch)
            accepted = await deliver(model, events)
        except IngressRefusedError as refused:
            refusals.count(request.url.path, refused.status, refused.problems[0].code)
            content: dict[str, Any] = {
                "errors": [_problem(p.field, p.message, p.code) for p in refused.problems]}
            # A 413's body is kept as far as it was read, with the size it declared.
            body = body or refused.partial
            size_bytes = None if refused.status != 413 else _declared_size(request, body)
            record_id = await _quarantine(quarantine, request, body,
                                          reason=refused.reason or ReasonCode.SCHEMA_VIOLATION,
                                          detail=json.dumps(content), size_bytes=size_bytes)
            if record_id is not None:
                content["quarantine_id"] = record_id
            return JSONResponse(content, status_code=refused.status)
        except _Undelivered as undelivered:
            return JSONResponse(
                {"errors": [_problem(
                    "(kafka)", f"Kafka did not acknowledge in {options.ack_timeout_s:g} s; the "
                    "events may still land. Retry after Retry-After seconds with the same "
                    "event_id values (listed in event_ids): the warehouse keeps one row per "
                    "event id, so a retry never counts twice", "kafka")],
                 "event_ids": undelivered.event_ids},
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
        400: {"description": "Empty, or not JSON Flywheel can store (streams.ingress)."},
        401: {"description": "Neither a Bearer token nor an X-API-Key names a key."},
        413: {"description": "Body over ingest.max_body_bytes."},
        422: {"description": "Field-level contract violations."},
        503: {"description": "Kafka did not acknowledge; retry after Retry-After seconds "
                            "with the same event ids (safe: one row per event id)."},
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
    quarantine: QuarantineProducer, request: Request, body: bytes, *, reason: ReasonCode,
    detail: str, size_bytes: int | None,
) -> str | None:
    """Send a refused body to the quarantine topic; its record id, or None if that failed."""
    try:
        record = await asyncio.to_thread(
            quarantine.send_rejected, body, source=f"ingest:{request.url.path}",
            reasons=[reason], detail=detail, size_bytes=size_bytes,
        )
    except Exception:  # quarantining must never turn a 4xx into a 500
        logger.exception("ingest: could not quarantine a rejected body")
        return None
    return str(record.record_id)


def _declared_size(request: Request, body: bytes) -> int:
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else len(body)


def _refused(status: int, field: str, message: str, code: str) -> IngressRefusedError:
    return IngressRefusedError.one(status, field, message, code,
                                   reason=ReasonCode.SCHEMA_VIOLATION)


def _as_schema_error(model: type[Contract], error: ValueError) -> SchemaValidationError:
    from pydantic import ValidationError

    from schemas.envelope import problems_of

    if isinstance(error, ValidationError):
        return SchemaValidationError(model.__name__, problems_of(error))
    return SchemaValidationError(model.__name__, [FieldProblem("(body)", str(error), "value")])


def _problem(field: str, message: str, code: str) -> dict[str, str]:
    return {"field": field, "message": message, "code": code}
