"""uvicorn's HTTP/1.1 protocol (h11) with the connection limits a public port needs.

uvicorn parses HTTP with h11 (conflicting or negative Content-Length, bad chunk
sizes and pipelined garbage are 400s, and a body is always read as a body), and
closes idle keep-alive connections. It has no deadline for the request head,
though: its keep-alive timer is cancelled by any byte, so a client sending one
header byte a second holds a connection for good, and its `limit_concurrency`
counts idle sockets, so a few hundred silent connections make every real query a
503. This subclass adds the two things missing, and nothing else:

- a request head must arrive whole within `header_timeout_s` of the connection
  opening or of the previous response ending, or the connection is closed;
- connections are capped in all and per client address; one over a cap is closed
  at once, before it costs a task.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from deploy.clickhouse.metrics import ServerMetrics


class ConnectionLimits:
    """Shared by every connection of one server."""

    def __init__(self, *, header_timeout_s: float, max_connections: int,
                 max_per_client: int, metrics: ServerMetrics) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.metrics = metrics
        self.open = 0
        self.per_client: Counter[str] = Counter()


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with a request-head deadline and connection caps (see the module)."""

    limits: ConnectionLimits  # set by `protocol_class`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        self._head_timer: asyncio.TimerHandle | None = None
        limits = self.limits
        reason = None
        if limits.open >= limits.max_connections:
            reason = "max_connections"
        elif limits.per_client[self._peer] >= limits.max_per_client:
            reason = "max_connections_per_client"
        self._counted = reason is None
        if reason is not None:
            limits.metrics.refused_connections.labels(reason).inc()
            transport.close()
            return
        limits.open += 1
        limits.per_client[self._peer] += 1
        limits.metrics.connections.set(limits.open)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if getattr(self, "_counted", False):
            self._counted = False
            limits = self.limits
            limits.open -= 1
            limits.per_client[self._peer] -= 1
            if limits.per_client[self._peer] <= 0:
                del limits.per_client[self._peer]
            limits.metrics.connections.set(limits.open)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in: the app has it now
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.limits.metrics.timed_out_connections.inc()
            self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class bound to one server's limits, for `uvicorn.Config(http=...)`."""
    return type("BoundGuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})

