"""Prometheus metrics of the stream worker, per stage, in their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StreamMetrics:
    """Records in/out, rejections by reason, lag, insert and processing latency."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_in = Counter("flywheel_streams_records_in", "Records read, by topic.",
                                  ["topic"], registry=r)
        self.records_out = Counter(
            "flywheel_streams_records_out", "Records by final outcome "
            "(curated, quarantined, error).", ["outcome"], registry=r)
        self.replays = Counter(
            "flywheel_streams_replays", "Records replayed after a restart with an outcome "
            "in the ledger: followed, or mismatch (settings changed in between; the event "
            "may sit in two tables).", ["outcome"], registry=r)
        self.rejections = Counter("flywheel_streams_rejections",
                                  "Quarantined records by stage and reason.",
                                  ["stage", "reason"], registry=r)
        self.redacted = Counter("flywheel_streams_redacted_turns",
                                "Curated turns that had private data redacted.", registry=r)
        self.join_outcomes = Counter(
            "flywheel_streams_feedback_join", "Feedback join outcomes (joined, early, "
            "recovered, turn_rejected, orphan).", ["outcome"], registry=r)
        self.lag = Gauge("flywheel_streams_consumer_lag", "Records behind the log end.",
                         ["topic", "partition"], registry=r)
        self.insert_latency = Histogram("flywheel_streams_insert_latency_seconds",
                                        "ClickHouse batch insert latency.", ["table"],
                                        buckets=_LATENCY_BUCKETS_S, registry=r)
        self.rows_inserted = Counter("flywheel_streams_rows_inserted", "Rows inserted.",
                                     ["table"], registry=r)
        self.processing_latency = Histogram(
            "flywheel_streams_batch_processing_seconds", "Pipeline time per polled batch.",
            buckets=_LATENCY_BUCKETS_S, registry=r)
        self.commits = Counter("flywheel_streams_commits", "Offset commits after inserts.",
                               registry=r)

    def serve(self, *, host: str, port: int) -> None:
        """Expose /metrics on host:port (a background thread of prometheus_client)."""
        start_http_server(port, addr=host, registry=self.registry)
