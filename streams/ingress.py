"""One dialect for Flywheel's HTTP ingress: the ingest API and the gateway share it.

Both services take untrusted bodies from the network. They authorize, read, decode and
refuse them the same way, so a client sees one rule everywhere:

- **Auth.** A request passes when `Authorization: Bearer KEY` or `X-API-Key: KEY` names a
  configured key. Either credential is enough: a wrong one beside a right one is ignored.
  With no keys configured, auth is off.
- **Size.** The body is read as a stream and refused with 413 as soon as it passes the
  cap; a declared `Content-Length` over the cap is refused before anything is read.
- **JSON.** The body is decoded by pydantic-core (jiter), whatever its `Content-Type`:
  UTF-8 only; no lone surrogates (`"\\ud800"`); at most 200 levels of nesting; integers
  of at most 4,300 digits; no `NaN` or `Infinity`. A body that breaks any of these is not
  JSON Flywheel can store and gets **400** (code `not_json`) on every route. Of a
  duplicated key, the last value wins, as in Python's `json`.

What happens after decoding (422 field errors on the ingest, OpenAI's 400 on the gateway)
is each service's own; `IngressRefusedError` carries the answer up to it. Both count their
refusals in one metric, `flywheel_ingress_refused_total{service, route, status, code}`.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import SecretStr
from pydantic_core import from_json
from starlette.requests import Request

from schemas.platform import ReasonCode
from streams.errors import IngressRefusedError

#: Most levels of nesting jiter decodes (its own fixed limit; deeper bodies get 400).
MAX_JSON_DEPTH = 200


class ApiKeys:
    """The keys an ingress accepts, compared in constant time."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._keys = [k.get_secret_value().encode() for k in keys]

    def authorized(self, request: Request) -> bool:
        """True when either credential header names a key (or no keys are configured)."""
        if not self._keys:
            return True
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        given = [c for c in (bearer, request.headers.get("x-api-key", "").strip()) if c]
        return any(self._matches(candidate) for candidate in given)

    def _matches(self, candidate: str) -> bool:
        encoded = candidate.encode("utf-8", "replace")
        # Every key is compared, so the time taken does not say which one was close.
        return sum(hmac.compare_digest(encoded, key) for key in self._keys) > 0


class RefusalCounter:
    """`flywheel_ingress_refused_total`: refused requests by service, route, status and code."""

    def __init__(self, registry: CollectorRegistry, *, service: str) -> None:
        self._service = service
        self._counter = Counter(
            "flywheel_ingress_refused", "Requests an ingress refused (4xx), by service, route, "
            "status and the first problem's code.", ["service", "route", "status", "code"],
            registry=registry)

    def count(self, route: str, status: int, code: str) -> None:
        self._counter.labels(self._service, route, str(status), code).inc()


async def read_body(request: Request, *, max_body_bytes: int, setting: str) -> bytes:
    """The request body, read as a stream and refused once it passes `max_body_bytes`.

    Raises:
        IngressRefusedError: 413, the body (declared or read) is over the cap.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes, setting, size_bytes=int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_body_bytes:
            refused = _too_large(max_body_bytes, setting, size_bytes=None)
            refused.partial = bytes(body)
            raise refused
    return bytes(body)


def decode_json(body: bytes) -> Any:
    """The JSON document of a body, under the limits of this module's docstring.

    Raises:
        IngressRefusedError: 400 `not_json`, with where the decoder stopped.
    """
    if not body.strip():
        raise IngressRefusedError.one(400, "(body)", "the body is empty; send one JSON document",
                                      "not_json", reason=ReasonCode.EMPTY)
    try:
        return from_json(body, allow_inf_nan=False)
    except ValueError as e:
        raise IngressRefusedError.one(
            400, "(body)", f"not UTF-8 JSON that Flywheel can store ({e}); send UTF-8 JSON "
            f"without lone surrogates, NaN or Infinity, at most {MAX_JSON_DEPTH} levels deep, "
            "with integers of at most 4,300 digits", "not_json", reason=ReasonCode.NOT_JSON,
        ) from e


def _too_large(
    max_body_bytes: int, setting: str, *, size_bytes: int | None
) -> IngressRefusedError:
    size = f"{size_bytes:,} bytes" if size_bytes is not None else "over the cap"
    return IngressRefusedError.one(
        413, "(body)", f"the body is {size}; the cap is {max_body_bytes:,} bytes ({setting}): "
        "send less, or split a batch", "too_long", reason=ReasonCode.TOO_LONG)
