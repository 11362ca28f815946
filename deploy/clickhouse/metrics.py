"""Prometheus metrics of the embedded ClickHouse server, served at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_PREFIX = "flywheel_clickhouse_http"


class ServerMetrics:
    """Requests, errors, durations and bytes, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{_PREFIX}_requests", "HTTP requests answered.",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter(f"{_PREFIX}_errors", "Requests that failed, by ClickHouse code.",
                              ["code"], registry=self.registry)
        self.duration = Histogram(
            f"{_PREFIX}_request_duration_seconds", "Time from request line to last byte sent.",
            ["endpoint"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.received_bytes = Counter(f"{_PREFIX}_received_bytes", "Request body bytes read.",
                                      registry=self.registry)
        self.sent_bytes = Counter(f"{_PREFIX}_sent_bytes", "Response body bytes sent.",
                                  registry=self.registry)
        self.written_rows = Counter(f"{_PREFIX}_written_rows", "Rows committed by inserts.",
                                    registry=self.registry)
        self.in_flight = Gauge(f"{_PREFIX}_requests_in_flight", "Requests being processed.",
                               registry=self.registry)
        self.sessions = Gauge(f"{_PREFIX}_sessions", "Open HTTP sessions.",
                              registry=self.registry)
        self.auth_failures = Counter(
            f"{_PREFIX}_auth_failures", "Requests refused for their credentials, by account "
            "('(unknown)' for a name that is none; never the password).", ["user"],
            registry=self.registry)
        self.refused_connections = Counter(
            f"{_PREFIX}_refused_connections", "Connections closed at once, by reason.",
            ["reason"], registry=self.registry)
        self.timed_out_connections = Counter(
            f"{_PREFIX}_timed_out_connections", "Connections closed for sending a request head "
            "too slowly.", registry=self.registry)
        self.connections = Gauge(f"{_PREFIX}_connections", "Open connections.",
                                 registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
