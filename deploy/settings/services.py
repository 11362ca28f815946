"""Settings of the services Flywheel talks to: Kafka, ClickHouse, Triton, Prometheus..."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from deploy.settings._base import Port, _check_port, _HttpServer, _Section


class ProducerSettings(_Section):
    """How Flywheel's producer SDK batches and waits (librdkafka settings behind it)."""

    linger_ms: int = Field(default=5, ge=0, description="Wait this long to fill a batch.")
    batch_size_bytes: int = Field(default=1_048_576, ge=1024)
    queue_max_messages: int = Field(default=100_000, ge=1, description="Local queue bound.")
    delivery_timeout_ms: int = Field(
        default=30_000, ge=1000, description="Give up (and report an error) after this long."
    )
    enqueue_timeout_s: float = Field(
        default=60.0, gt=0, description="How long `send` waits for room in a full local queue."
    )
    compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = "lz4"


class KafkaSettings(_Section):
    """Apache Kafka: an external cluster, or the local single-node KRaft broker."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port list of an existing Kafka cluster; when set, no local broker runs.",
    )
    host: str = "127.0.0.1"
    port: Port = 9092
    controller_port: Port = 9095
    version: str = Field(default="4.1.1", description="Apache Kafka version resolved from Maven.")
    jars_dir: Path | None = Field(
        default=None,
        description="Where the Kafka jars are cached; default ~/.cache/flywheel/kafka-<version>.",
    )
    heap_mb: int = Field(default=512, ge=128)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = Field(default=1, ge=1, description="For topics Flywheel creates.")
    producer: ProducerSettings = ProducerSettings()

    _ports = field_validator("port", "controller_port")(_check_port)

    @property
    def external(self) -> bool:
        return self.bootstrap_servers is not None

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"{self.host}:{self.port}"

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client Flywheel creates."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username or ""
            config["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        return config


class ClickHouseUser(_Section):
    """One account of the embedded ClickHouse server, with its limits.

    An empty password means "generate one": it is kept in
    `<state_dir>/clickhouse/passwords/<name>` (mode 0600). No account is open without
    a password. The limits are applied before `readonly`, so a read-only account
    cannot lift them; 0 means no limit.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: SecretStr = SecretStr("")
    readonly: bool = False
    max_execution_time_s: float = Field(
        default=0, ge=0, description="A query running longer is cancelled (TIMEOUT_EXCEEDED).")
    max_memory_usage_bytes: int = Field(default=0, ge=0)
    max_result_rows: int = Field(default=0, ge=0)
    max_concurrent_queries: int = Field(
        default=0, ge=0, description="Queries of this account running at once; more get 202.")


def _default_clickhouse_users() -> list[ClickHouseUser]:
    return [
        ClickHouseUser(name="default", readonly=False),
        ClickHouseUser(name="analyst", readonly=True, max_execution_time_s=60,
                       max_memory_usage_bytes=4 << 30, max_result_rows=1_000_000,
                       max_concurrent_queries=8),
    ]


class ClickHouseSettings(_HttpServer):
    """ClickHouse: a real server by URL, or the embedded chDB engine behind the HTTP interface."""

    url: str | None = Field(
        default=None,
        description="http(s)://host:port of a real ClickHouse server; when set, none runs locally.",
    )
    host: str = "127.0.0.1"
    port: Port = 8123
    database: str = "flywheel"
    user: str = Field(default="default", description="The account Flywheel's own code uses.")
    password: SecretStr = Field(
        default=SecretStr(""),
        description="Its password; empty: the embedded server's generated one (or none for a "
        "real server).")
    users: list[ClickHouseUser] = Field(
        default_factory=_default_clickhouse_users,
        description="Accounts the embedded server accepts (a real server has its own).",
    )
    max_body_size_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024,
        description="Largest request body, counted after decompression.")
    max_connections: int = Field(default=1024, ge=1, description="Open connections in all.")
    max_connections_per_client: int = Field(
        default=512, ge=1, description="Open connections from one client address.")
    max_concurrent_queries: int = Field(
        default=32, ge=1, description="Queries running at once; more wait up to queue_timeout_s.")
    queue_timeout_s: float = Field(default=10.0, gt=0)
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="A connection that has not sent a whole request head "
        "by then is closed (slow-header attacks).")
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for the next piece of a request body.")
    keep_alive_timeout_s: int = Field(default=10, ge=1)
    into_outfile_dir: Path | None = Field(
        default=None,
        description="Allow INTO OUTFILE for admin accounts, only to files under this folder. "
        "Unset (the default): INTO OUTFILE is refused for every account.")
    compress: Literal["lz4", "zstd", "none"] = "lz4"

    _ports = field_validator("port")(_check_port)

    @model_validator(mode="after")
    def _user_is_known(self) -> ClickHouseSettings:
        names = [u.name for u in self.users]
        if len(set(names)) != len(names):
            raise ValueError("clickhouse.users has two accounts with the same name; rename one")
        return self


class WarehouseSettings(_Section):
    """Retention of the warehouse tables (applied as ClickHouse TTLs by the migrations)."""

    turns_ttl_days: int = Field(default=365, ge=1, description="chat_turns, feedback, examples.")
    quarantine_ttl_days: int = Field(default=30, ge=1)
    alerts_ttl_days: int = Field(default=365, ge=1)


class IngestSettings(_Section):
    """The HTTP ingest service for backends that cannot speak Kafka."""

    host: str = "127.0.0.1"
    port: Port = 8088
    api_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("flywheel-dev-key")],
        description="Accepted keys (Authorization: Bearer KEY or X-API-Key); empty disables auth.",
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=1000, ge=1)
    ack_timeout_s: float = Field(
        default=10.0, gt=0, description="Answer 503 if Kafka has not acknowledged by then."
    )
    producer_name: str = "flywheel-ingest"
    linger_ms: int = Field(
        default=0, ge=0,
        description="linger.ms of the ingest's Kafka producers. Each request waits for its "
        "acknowledgement, so time spent filling a batch is request latency; concurrent "
        "requests still share batches. kafka.producer.linger_ms stays for the SDK.")

    _ports = field_validator("port")(_check_port)


class TritonSettings(_Section):
    """NVIDIA Triton Inference Server: external, or the binary shipped in nvidia-pytriton."""

    url: str | None = Field(
        default=None,
        description="host:port of an external Triton's HTTP endpoint; when set, none runs locally.",
    )
    grpc_url: str | None = Field(default=None, description="host:port of external gRPC.")
    metrics_url: str | None = Field(default=None, description="URL of an external Triton /metrics.")
    host: str = "127.0.0.1"
    http_port: Port = 8000
    grpc_port: Port = 8001
    metrics_port: Port = 8002
    model_repository: Path | None = Field(
        default=None, description="Model repository; default <state_dir>/triton/models."
    )
    exit_timeout_s: int = Field(default=10, ge=1)

    _ports = field_validator("http_port", "grpc_port", "metrics_port")(_check_port)

    @property
    def external(self) -> bool:
        return self.url is not None

    @property
    def http_address(self) -> str:
        return self.url or f"{self.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return self.grpc_url or f"{self.host}:{self.grpc_port}"

    @property
    def metrics_address(self) -> str:
        return self.metrics_url or f"http://{self.host}:{self.metrics_port}/metrics"


class PrometheusSettings(_HttpServer):
    """Prometheus: external by URL, or Debian's `prometheus` run by the stack."""

    port: Port = 9090
    binary: str = "prometheus"
    scrape_interval_s: int = Field(default=5, ge=1)
    evaluation_interval_s: int = Field(default=5, ge=1)
    retention: str = "7d"
    extra_scrape_targets: list[str] = Field(
        default_factory=list, description="host:port of more /metrics endpoints to scrape."
    )

    _ports = field_validator("port")(_check_port)


class AlertmanagerSettings(_HttpServer):
    """Alertmanager: external by URL, or Debian's `prometheus-alertmanager` run by the stack."""

    port: Port = 9093
    binary: str = "prometheus-alertmanager"
    webhook_url: str | None = Field(
        default=None,
        description="Where Alertmanager posts notifications; default: Flywheel's receiver at "
        "monitoring.receiver_host:receiver_port.",
    )

    _ports = field_validator("port")(_check_port)


class MetricsSettings(_Section):
    """Where Flywheel's own processes expose Prometheus metrics."""

    host: str = "127.0.0.1"
    port: Port = 9300

    _ports = field_validator("port")(_check_port)


class ModelSettings(_Section):
    """The served chat model: its Triton name and the base model adapters apply to."""

    name: str = Field(
        default="flywheel-chat", pattern=r"^[A-Za-z0-9_-]+$",
        description="Triton model name, and `model` on chat events.",
    )
    base_model_path: Path | None = Field(
        default=None,
        description="A Hugging Face causal LM folder; default <cache_dir>/base-model, "
        "built by `flywheel trainer bootstrap`.",
    )


