"""The gateway: OpenAI-compatible chat completions on Triton, every exchange sent to Kafka.

`POST /v1/chat/completions` renders the messages into the model's prompt format, asks the
live version (or, for its share, the canary's Triton model; a failed canary request is
answered by the live version and counted against the canary), and answers in OpenAI's shape
with a `flywheel` extension (`version`, `adapter_id`, `conversation_id`,
`turn_event_id` to rate the answer). The user turn and the answer are sent as ChatEvents
tagged with the adapter id that answered. `POST /v1/feedback` sends a FeedbackEvent.
Bad requests get 400 with an OpenAI-style error body; Triton down gets 503 + Retry-After.

Auth, the body cap (`inference.max_body_bytes`, 413 before parsing) and JSON decoding are
the ingress rules the ingest API uses too (`streams.ingress`): either a Bearer token or an
X-API-Key that names a key is enough; a body that is empty or not JSON Flywheel can store
(not UTF-8, a lone surrogate, nesting over 200 levels, an integer over 4,300 digits) gets
400. A rendered prompt over `inference.max_prompt_chars` gets 400 before Triton sees it.
Every error, a 404 or 405 included, has OpenAI's shape `{"error": {"message", "type",
"param", "code"}}`. A refused `/v1/feedback` body is an event refused: it goes to the
quarantine topic with its reason, as the ingest's do, and the answer's `quarantine_id`
names its row in the `quarantine` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from deploy.settings import FlywheelSettings
from inference.canary import ERRORS_METRIC, FEEDBACK_METRIC, LATENCY_METRIC
from inference.canary_model import canary_model_name
from inference.client import AsyncTritonChat, Completion, GenerationOptions
from inference.errors import BadRequestError, InferenceError, TritonUnavailableError
from inference.gateway.answers import RecentAnswers
from inference.gateway.api import ChatRequest, FeedbackRequest
from inference.gateway.prompt import render_prompt
from inference.gateway.text import clean_answer
from inference.routing import RoutingWatcher
from inference.serving_status import check_serving
from schemas import ChatEvent, FeedbackEvent
from schemas.chat import Role
from schemas.platform import ReasonCode
from streams.errors import IngressRefusedError, StreamsError
from streams.ingress import ApiKeys, RefusalCounter, decode_json, read_body
from streams.producer import ChatEventProducer, DeliveryReport, FeedbackProducer
from streams.quarantine import QuarantineProducer

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10)


def _error(status: int, message: str, *, kind: str = "invalid_request_error",
           param: str | None = None, headers: dict[str, str] | None = None,
           extra: dict[str, Any] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse({**body, **(extra or {})}, status_code=status, headers=headers)


def _refusal(refused: IngressRefusedError, *, extra: dict[str, Any] | None = None,
             ) -> JSONResponse:
    [first, *_] = refused.problems
    kind = "invalid_request_error" if refused.status != 413 else "request_too_large"
    return _error(refused.status, str(refused), kind=kind, param=first.field, extra=extra)


def create_app(
    settings: FlywheelSettings, *, model: str | None = None, repo: Path | None = None,
    chat_topic: str | None = None, feedback_topic: str | None = None,
) -> FastAPI:
    """The gateway application; clients are created on first use and closed on shutdown."""
    options = settings.inference
    model_name = model or settings.model.name
    keys = ApiKeys(options.api_keys)
    routing = RoutingWatcher(repo or settings.triton_model_repository(), model_name,
                             poll_interval_s=options.routing_poll_interval_s)
    triton = AsyncTritonChat(settings.triton.grpc_address, model=model_name,
                             timeout_s=options.request_timeout_s)
    canary = AsyncTritonChat(settings.triton.grpc_address, model=canary_model_name(model_name),
                             timeout_s=options.request_timeout_s)
    answers = RecentAnswers()
    chats = ChatEventProducer(settings.kafka, producer_name=options.gateway_producer_name,
                              topic=chat_topic)
    feedback = FeedbackProducer(settings.kafka, producer_name=options.gateway_producer_name,
                                topic=feedback_topic)
    quarantine = QuarantineProducer(settings.kafka, producer_name=options.gateway_producer_name)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await triton.close()
        await canary.close()
        for producer in (chats, feedback, quarantine):
            try:
                await asyncio.to_thread(producer.close, 10)
            except InferenceError as e:  # pragma: no cover - delivery errors subclass this
                logger.error("gateway: events undelivered at shutdown: %s", e)
            except Exception as e:  # noqa: BLE001
                logger.error("gateway: events undelivered at shutdown: %s", e)

    app = FastAPI(title="Flywheel gateway", version="1", description=__doc__, lifespan=lifespan)
    registry = CollectorRegistry()
    requests_total = Counter("flywheel_gateway_requests", "Gateway requests by route and status.",
                             ["route", "status"], registry=registry)
    latency_s = Histogram(
        LATENCY_METRIC,
        "Chat completion latency at the gateway, by model version.", ["model", "version"],
        registry=registry, buckets=LATENCY_BUCKETS_S)
    triton_s = Histogram(
        "flywheel_gateway_triton_duration_seconds",
        "Time waiting on Triton (its queue + compute), by model version.", ["model", "version"],
        registry=registry, buckets=LATENCY_BUCKETS_S)
    tokens_total = Counter("flywheel_gateway_tokens", "Tokens by kind and version.",
                           ["model", "version", "kind"], registry=registry)
    version_errors = Counter(
        ERRORS_METRIC, "Requests a version failed (a canary's are retried on the live one).",
        ["model", "version"], registry=registry)
    feedback_total = Counter(
        FEEDBACK_METRIC, "Feedback on answers, by the version that answered.",
        ["model", "version", "negative"], registry=registry)
    refusals = RefusalCounter(registry, service="gateway")
    app.mount("/metrics", make_asgi_app(registry=registry))

    def refused_as(route: str, path: str, status: int, code: str) -> None:
        requests_total.labels(route, str(status)).inc()
        refusals.count(path, status, code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _explain(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own answers (404, 405) in OpenAI's shape too.
        return _error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    async def read_json(request: Request) -> tuple[bytes, Any]:
        body = await read_body(request, max_body_bytes=options.max_body_bytes,
                               setting="inference.max_body_bytes")
        return body, decode_json(body)

    async def quarantined(request: Request, body: bytes, reason: ReasonCode,
                          detail: str) -> dict[str, Any]:
        """Send a refused event body to the quarantine topic; `quarantine_id` to answer."""
        try:
            record = await asyncio.to_thread(
                quarantine.send_rejected, body, source=f"gateway:{request.url.path}",
                reasons=[reason], detail=detail)
        except Exception:  # quarantining must never turn a 4xx into a 500
            logger.exception("gateway: could not quarantine a refused feedback body")
            return {}
        return {"quarantine_id": str(record.record_id)}

    def on_delivery(report: DeliveryReport) -> None:
        if report.error is not None:
            logger.error("chat event %s not delivered: %s", report.event_id, report.error)

    async def generate(prompt: str, generation: GenerationOptions) -> Completion:
        current = routing.current()
        if current.canary is not None and random.random() < current.canary_share:
            try:
                return await canary.complete(prompt, version=current.canary, options=generation)
            except BadRequestError:
                raise  # the live version would refuse it too
            except InferenceError as e:
                version_errors.labels(model_name, str(current.canary)).inc()
                logger.warning("canary version %s failed a request, the live version answers "
                               "it: %s", current.canary, e)
        # Triton has one live version loaded and swaps it atomically: ask for "the served
        # version" so a swap can never strand a request on an unloaded one.
        try:
            return await triton.complete(prompt, version=None, options=generation)
        except BadRequestError:
            raise
        except InferenceError:
            version_errors.labels(model_name, str(current.live)).inc()
            raise

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        started = time.perf_counter()
        if not keys.authorized(request):
            refused_as("chat", request.url.path, 401, "auth")
            return _error(401, _UNAUTHORIZED, kind="authentication_error")
        try:
            _raw, document = await read_json(request)
            body = ChatRequest.model_validate(document)
        except IngressRefusedError as refused:
            refused_as("chat", request.url.path, refused.status, refused.problems[0].code)
            return _refusal(refused)
        except ValidationError as e:
            refused_as("chat", request.url.path, 400, "invalid")
            return _error(400, _explain(e.errors()))
        conversation_id = body.conversation_id or uuid.uuid4().hex
        turn = len(body.messages) - 1
        try:  # before Triton: a turn the warehouse would refuse is not worth an answer
            user_event = ChatEvent(
                conversation_id=conversation_id, turn_index=turn, role=Role.USER,
                text=body.messages[-1].content, tenant=options.tenant,
                metadata=dict(body.metadata))
        except ValidationError as e:
            refused_as("chat", request.url.path, 400, "invalid")
            return _error(400, _explain(e.errors()))
        prompt = render_prompt(body.messages)
        if len(prompt) > options.max_prompt_chars:
            refused_as("chat", request.url.path, 400, "prompt_too_long")
            return _error(400, f"the messages make a prompt of {len(prompt):,} characters; "
                          f"at most {options.max_prompt_chars:,} (inference.max_prompt_chars): "
                          "send fewer or shorter messages", param="messages")
        generation = GenerationOptions(
            max_new_tokens=body.max_completion_tokens or body.max_tokens or options.max_new_tokens,
            temperature=options.temperature if body.temperature is None else body.temperature,
            top_p=options.top_p if body.top_p is None else body.top_p,
            stop=body.stop_list(),
        )
        try:
            answer = await generate(prompt, generation)
            # The user sees what the warehouse records: control characters replaced.
            answer = dataclasses.replace(answer, text=clean_answer(answer.text))
        except BadRequestError as e:
            refused_as("chat", request.url.path, 400, "bad_request")
            return _error(400, str(e))
        except TritonUnavailableError as e:
            requests_total.labels("chat", "503").inc()
            return _error(503, f"the model is unavailable, retry later ({e})",
                          kind="service_unavailable",
                          headers={"Retry-After": str(options.retry_after_s)})
        except InferenceError as e:
            requests_total.labels("chat", "500").inc()
            return _error(500, str(e), kind="server_error")
        answer_event = ChatEvent(
            conversation_id=conversation_id, turn_index=turn + 1, role=Role.ASSISTANT,
            text=answer.text, model=model_name, model_version=answer.adapter_id,
            latency_ms=answer.latency_ms, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, tenant=options.tenant,
            metadata={**body.metadata, "triton_version": answer.version},
        )
        version = str(answer.version)
        answers.remember(answer_event.event_id, version)
        triton_s.labels(model_name, version).observe(answer.latency_ms / 1000)
        tokens_total.labels(model_name, version, "prompt").inc(answer.prompt_tokens)
        tokens_total.labels(model_name, version, "completion").inc(answer.completion_tokens)
        result = _completion_body(model_name, answer, answer_event, conversation_id)
        latency_s.labels(model_name, version).observe(time.perf_counter() - started)
        requests_total.labels("chat", "200").inc()
        # The events are produced once the answer is on its way: building, serialising and
        # queueing them (~0.4 ms) then no longer sits in front of other clients' answers.
        send_events = BackgroundTask(_send_all, chats, (user_event, answer_event), on_delivery)
        if body.stream:
            return StreamingResponse(_stream(result), media_type="text/event-stream",
                                     background=send_events)
        return JSONResponse(result, background=send_events)

    @app.post("/v1/feedback", response_model=None)
    async def post_feedback(request: Request) -> Any:
        if not keys.authorized(request):
            refused_as("feedback", request.url.path, 401, "auth")
            return _error(401, _UNAUTHORIZED, kind="authentication_error")
        raw = b""
        try:
            raw, document = await read_json(request)
            body = FeedbackRequest.model_validate(document)
            event = FeedbackEvent(tenant=options.tenant, **body.model_dump())
        except IngressRefusedError as refused:
            refused_as("feedback", request.url.path, refused.status, refused.problems[0].code)
            kept = await quarantined(request, raw or refused.partial,
                                     refused.reason or ReasonCode.SCHEMA_VIOLATION, str(refused))
            return _refusal(refused, extra=kept)
        except ValidationError as e:
            refused_as("feedback", request.url.path, 400, "invalid")
            message = _explain(e.errors())
            kept = await quarantined(request, raw, ReasonCode.SCHEMA_VIOLATION, message)
            return _error(400, message, extra=kept)
        try:
            await asyncio.wait_for(feedback.send_async(event), timeout=options.ack_timeout_s)
        except (TimeoutError, StreamsError) as e:
            logger.warning("gateway: Kafka did not acknowledge feedback %s: %s",
                           event.event_id, e)
            requests_total.labels("feedback", "503").inc()
            return _error(
                503, f"Kafka did not acknowledge in {options.ack_timeout_s:g} s; the feedback "
                "may still land. Retry after Retry-After seconds (a retry is a new event)",
                kind="service_unavailable", headers={"Retry-After": str(options.retry_after_s)})
        answered_by = answers.version_of(event.turn_event_id)
        if answered_by is not None:
            feedback_total.labels(model_name, answered_by,
                                  "true" if event.is_negative else "false").inc()
        requests_total.labels("feedback", "202").inc()
        return JSONResponse({"event_id": str(event.event_id)}, status_code=202)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        current = routing.current()
        return {"object": "list", "data": [
            {"id": model_name, "object": "model", "owned_by": "flywheel",
             "version": current.live, "canary": current.canary}]}

    @app.get("/healthz", response_model=None)
    async def healthz() -> JSONResponse:
        # OK only while Triton has the model ready: after a Triton restart it has none.
        health = await asyncio.to_thread(check_serving, settings.triton.grpc_address,
                                         model_name, live_version=routing.current().live)
        return JSONResponse(health.body(), status_code=200 if health.serving else 503)

    return app


async def _send_all(producer: ChatEventProducer, events: tuple[ChatEvent, ...],
                    on_delivery: Callable[[DeliveryReport], None]) -> None:
    for event in events:
        producer.send(event, on_delivery=on_delivery)


def _completion_body(
    model: str, answer: Completion, event: ChatEvent, conversation_id: str
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{event.event_id.hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": answer.adapter_id,
        "choices": [{"index": 0, "finish_reason": answer.finish_reason,
                     "message": {"role": "assistant", "content": answer.text}}],
        "usage": {"prompt_tokens": answer.prompt_tokens,
                  "completion_tokens": answer.completion_tokens,
                  "total_tokens": answer.prompt_tokens + answer.completion_tokens},
        "flywheel": {"version": answer.version, "adapter_id": answer.adapter_id,
                     "conversation_id": conversation_id,
                     "turn_event_id": str(event.event_id)},
    }


async def _stream(result: dict[str, Any]) -> AsyncIterator[bytes]:
    """One content chunk, then the finish chunk (generation is not token-streamed yet)."""
    choice = result["choices"][0]
    base = {k: result[k] for k in ("id", "created", "model", "system_fingerprint")}
    chunks = [
        {**base, "object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]},
             "finish_reason": None}]},
        {**base, "object": "chat.completion.chunk", "usage": result["usage"],
         "flywheel": result["flywheel"],
         "choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
    ]
    for chunk in chunks:
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


_UNAUTHORIZED = ("missing or wrong API key; send 'Authorization: Bearer KEY' or "
                 "'X-API-Key: KEY' (inference.api_keys)")


def _explain(errors: Any) -> str:
    parts = []
    for item in errors:
        field = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{field}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
