"""The one settings object of Flywheel.

Built once at an entry point (the CLI, a service's `main`, a test fixture) from, in
order of precedence: explicit arguments, `FLYWHEEL_*` environment variables (nested
fields with `__`, e.g. `FLYWHEEL_KAFKA__PORT=19092`), a TOML file, and the defaults
below. It is then passed down; no other module reads the environment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "FLYWHEEL_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_CONFIG_FILE = Path("flywheel.toml")

Port = int


def _check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"a port must be between 1 and 65535, got {value}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _HttpServer(_Section):
    """A service reached over HTTP: external when `url` is set, else local on host:port."""

    url: str | None = None
    host: str = "127.0.0.1"
    port: Port

    @property
    def external(self) -> bool:
        return self.url is not None

    @property
    def http_url(self) -> str:
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")


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
    """One account of the embedded ClickHouse server."""

    name: str = Field(min_length=1)
    password: SecretStr = SecretStr("")
    readonly: bool = False


def _default_clickhouse_users() -> list[ClickHouseUser]:
    return [
        ClickHouseUser(name="default", password=SecretStr(""), readonly=False),
        ClickHouseUser(name="analyst", password=SecretStr("analyst"), readonly=True),
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
    password: SecretStr = SecretStr("")
    users: list[ClickHouseUser] = Field(
        default_factory=_default_clickhouse_users,
        description="Accounts the embedded server accepts (a real server has its own).",
    )
    max_body_size_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    max_connections: int = Field(default=64, ge=1)
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


class TrainerSettings(_Section):
    """LoRA fine-tuning on curated windows, the evaluation gate and continuous mode."""

    lora_rank: int = Field(default=8, ge=1, description="LoRA rank r; must be at least 1.")
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        default=None, description="Module names LoRA wraps; default: peft's choice per model type."
    )
    learning_rate: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=10, ge=0)
    batch_size: int = Field(default=8, ge=1, description="Packed sequences per micro-batch.")
    grad_accumulation_steps: int = Field(default=1, ge=1)
    sequence_length_tokens: int = Field(default=128, ge=16)
    max_steps: int = Field(default=300, ge=1, description="Optimizer steps at most.")
    max_epochs: int = Field(default=4, ge=1)
    eval_every_steps: int = Field(default=20, ge=1)
    early_stopping_patience: int = Field(
        default=3, ge=1, description="Stop after this many evaluations without a better loss."
    )
    checkpoint_every_steps: int = Field(default=50, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads; default torch's."
    )
    search_learning_rates: list[float] = Field(
        default_factory=list, description="Optional search: learning rates to try on the window."
    )
    search_ranks: list[int] = Field(default_factory=list, description="Optional search: ranks.")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_examples_per_topic: int = Field(default=5_000, ge=1)
    thumbs_down: Literal["exclude", "negative"] = Field(
        default="negative",
        description="Never trained on; `negative` also reports their perplexity in the gate.",
    )
    window_s: int = Field(
        default=3600, ge=1, description="Windows are [k*window_s, (k+1)*window_s)."
    )
    window_grace_s: int = Field(default=60, ge=0, description="Wait for late rows after a close.")
    min_new_examples: int = Field(default=50, ge=1, description="`watch` trains from this many.")
    watch_poll_interval_s: float = Field(default=30.0, gt=0)
    regression_tolerance: float = Field(
        default=0.05, ge=0, description="Allowed relative perplexity rise on the regression set."
    )
    min_improvement: float = Field(
        default=0.0, ge=0, description="Required relative perplexity drop on the new data."
    )
    toxicity_tolerance: float = Field(default=0.02, ge=0, description="Allowed toxicity rise.")
    eval_generations: int = Field(default=16, ge=0, description="Generations for BLEU/toxicity.")
    max_new_tokens: int = Field(default=32, ge=1)
    runs_dir: Path | None = Field(
        default=None, description="Checkpoints and run files; default <state_dir>/trainer/runs."
    )


class StreamsSettings(_Section):
    """The stream processors: cleaning limits, safety thresholds and lists, caps, join, sink."""

    consumer_group: str = Field(default="flywheel-streams", min_length=1)
    session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="A dead worker's partitions move after this long."
    )
    poll_batch_max: int = Field(default=2000, ge=1, description="Records read per poll.")
    min_chars: int = Field(default=1, ge=1, description="Shorter cleaned turns are `empty`.")
    max_chars: int = Field(default=8_000, ge=16, description="Longer cleaned turns: `too_long`.")
    max_record_bytes: int = Field(default=262_144, ge=1024, description="Raw record size cap.")
    language_sample_chars: int = Field(default=160, ge=16, description="Text langid reads.")
    languages: list[str] = Field(
        default_factory=list, description="Accepted ISO 639-1 codes; empty accepts every one."
    )
    dedup_window_records: int = Field(default=50_000, ge=1, description="Per partition.")
    near_dup_threshold: float = Field(default=0.9, gt=0, le=1, description="MinHash Jaccard.")
    near_dup_min_chars: int = Field(default=80, ge=1, description="Shorter text: exact only.")
    minhash_permutations: int = Field(default=64, ge=16)
    toxicity_threshold: float = Field(default=0.8, gt=0, le=1)
    protected_groups: list[str] = Field(
        default_factory=lambda: [
            "women", "men", "muslims", "jews", "christians", "hindus", "buddhists", "atheists",
            "black people", "white people", "asians", "hispanics", "latinos", "immigrants",
            "refugees", "gay people", "gays", "lesbians", "trans people", "transgender people",
            "disabled people", "old people", "the elderly", "arabs", "mexicans", "africans",
            "indians", "chinese people", "catholics", "blacks", "whites", "foreigners",
        ],
        description="Groups whose generalizations and attacks are flagged (lowercase).",
    )
    attack_terms: list[str] = Field(
        default_factory=lambda: [
            "should be banned", "should be deported", "should die", "should be killed",
            "are vermin", "are animals", "are parasites", "are subhuman", "are a disease",
            "go back to", "don't deserve", "do not deserve", "are inferior", "hate all",
            "get rid of", "exterminate", "are scum", "are trash", "are filth",
        ],
        description="Phrases that make a mention of a protected group an identity attack.",
    )
    stereotype_terms: list[str] = Field(
        default_factory=lambda: [
            "lazy", "stupid", "criminals", "violent", "dishonest", "greedy", "terrorists",
            "bad at", "can't drive", "cannot drive", "too emotional", "dirty", "thieves",
            "untrustworthy", "less intelligent", "not smart", "naturally worse", "all the same",
            "good at math", "cheap", "aggressive", "weak", "liars",
        ],
        description="Traits that, generalized to a whole group, make a stereotype.",
    )
    cap_window_s: float = Field(default=300.0, gt=0, description="Balance caps reset this often.")
    cap_share: float = Field(
        default=0.5, gt=0, le=1, description="Most of a window one topic/tenant/group may take."
    )
    cap_min_records: int = Field(
        default=500, ge=1, description="Caps apply only once a window holds this many records."
    )
    join_ttl_s: float = Field(default=3_600.0, gt=0, description="How long a turn waits.")
    join_max_turns: int = Field(default=200_000, ge=1, description="Turns kept for the join.")
    sink_batch_rows: int = Field(default=5_000, ge=1, description="Flush at this many rows.")
    sink_flush_interval_s: float = Field(default=0.5, gt=0, description="Or after this long.")
    sink_retry_max: int = Field(default=8, ge=0, description="Insert retries before giving up.")


class InferenceSettings(_Section):
    """Serving: the Triton model's shape, the hot-swap controller and the OpenAI-style gateway."""

    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8090
    api_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("flywheel-dev-key")],
        description="Gateway keys (Authorization: Bearer KEY); empty disables auth.",
    )
    tenant: str = Field(default="gateway", min_length=1, description="Tenant on chat events.")
    gateway_producer_name: str = "flywheel-gateway"
    max_new_tokens: int = Field(default=32, ge=1, le=1024, description="When a request says none.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1)
    request_timeout_s: float = Field(default=30.0, gt=0, description="Gateway -> Triton.")
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After on a 503.")
    max_batch_size: int = Field(default=8, ge=1, description="Triton dynamic batching.")
    max_queue_delay_us: int = Field(default=2000, ge=0)
    instance_count: int = Field(default=1, ge=1, description="Model instances per version.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(
        default=1, ge=1, description="Per instance; 1 keeps swaps clean on small CPUs."
    )
    controller_group_id: str = "flywheel-inference-controller"
    load_timeout_s: float = Field(default=120.0, gt=0, description="Load + ready of a version.")
    warmup_requests: int = Field(default=2, ge=0)
    routing_poll_interval_s: float = Field(
        default=0.2, gt=0, description="How often the gateway rereads routing.json."
    )
    drain_s: float = Field(
        default=1.0, ge=0, description="Wait after switching before unloading the old version."
    )
    canary_share: float = Field(
        default=0.0, ge=0, le=1, description="Share of traffic a new version gets first; 0 = none."
    )
    canary_window_s: float = Field(default=60.0, gt=0)
    canary_min_requests: int = Field(default=20, ge=1)
    canary_max_p99_ratio: float = Field(
        default=1.5, gt=1, description="Roll back when canary p99 exceeds live p99 by this."
    )
    canary_max_error_rate: float = Field(default=0.01, ge=0, le=1)
    canary_max_negative_feedback_rate: float = Field(default=0.5, ge=0, le=1)

    _ports = field_validator("gateway_port")(_check_port)


class MonitoringSettings(_Section):
    """Drift detectors, latency thresholds, the alert receiver and automatic actions."""

    metrics_host: str = "127.0.0.1"
    metrics_port: Port = Field(default=9310, description="`flywheel monitor run` /metrics.")
    receiver_host: str = "127.0.0.1"
    receiver_port: Port = Field(default=9311, description="`flywheel alerts receiver`.")
    evaluation_interval_s: float = Field(default=60.0, gt=0, description="Between evaluations.")
    current_window_s: int = Field(default=3600, ge=1, description="The sliding current window.")
    reference_period_s: int = Field(
        default=7 * 86400, ge=1,
        description="Fallback reference when no serving version records its training window: "
        "the period just before the current window.",
    )
    min_window_rows: int = Field(
        default=50, ge=2, description="Fewer rows in either window report insufficient data."
    )
    max_window_rows: int = Field(
        default=2000, ge=2, description="Rows sampled per window for the embedding test."
    )
    alpha: float = Field(
        default=1e-4, gt=0, lt=1,
        description="Significance of each test; one evaluation a minute is 1,440 tests a day.",
    )
    permutations: int = Field(default=500, ge=20, description="MMD permutation-test draws.")
    psi_threshold: float = Field(default=0.2, gt=0, description="PSI above this is drift.")
    length_bins: int = Field(default=10, ge=2, description="Quantile bins of numeric features.")
    page_hinkley_delta: float = Field(
        default=0.1, ge=0, description="Tolerated rate change, in reference standard deviations."
    )
    page_hinkley_threshold: float = Field(
        default=35.0, gt=0,
        description="Page-Hinkley lambda; false-alarm odds per run ~ exp(-2 * delta * lambda).",
    )
    per_tenant: bool = Field(default=True, description="Also test each tenant with enough rows.")
    latency_p99_thresholds_s: dict[str, float] = Field(
        default_factory=dict, description="p99 latency threshold per model name, in seconds."
    )
    default_latency_p99_s: float = Field(default=2.0, gt=0, description="For other models.")
    auto_retrain_on_drift: bool = Field(
        default=False, description="A firing drift alert asks the trainer to retrain."
    )
    auto_rollback: bool = Field(
        default=False,
        description="A latency/error alert on a freshly promoted version rolls it back.",
    )
    fresh_promotion_s: int = Field(
        default=3600, ge=1, description="A version is `freshly promoted` for this long."
    )

    _ports = field_validator("metrics_port", "receiver_port")(_check_port)


class FlywheelSettings(BaseSettings):
    """Every address, path, port, credential and threshold Flywheel uses."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        toml_file=DEFAULT_CONFIG_FILE,
    )

    state_dir: Path = Field(
        default=Path(".flywheel"), description="Data, logs and pid files of the local stack."
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "flywheel",
        description="Downloads shared between checkouts (Kafka jars).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    startup_timeout_s: float = Field(default=120.0, gt=0)
    stop_timeout_s: float = Field(default=30.0, gt=0)

    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    ingest: IngestSettings = IngestSettings()
    triton: TritonSettings = TritonSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    alertmanager: AlertmanagerSettings = AlertmanagerSettings()
    metrics: MetricsSettings = MetricsSettings()
    model: ModelSettings = ModelSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    inference: InferenceSettings = InferenceSettings()
    streams: StreamsSettings = StreamsSettings()
    trainer: TrainerSettings = TrainerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    def kafka_jars_dir(self) -> Path:
        return (self.kafka.jars_dir or self.cache_dir / f"kafka-{self.kafka.version}").expanduser()

    def base_model_path(self) -> Path:
        return (self.model.base_model_path or self.cache_dir / "base-model").expanduser()

    def triton_model_repository(self) -> Path:
        path = self.triton.model_repository or self.state_path / "triton" / "models"
        return path.expanduser().resolve()


def load_settings(config_file: Path | None = None, **overrides: Any) -> FlywheelSettings:
    """Build the settings from the environment, a TOML file and explicit overrides.

    Raises:
        ConfigError: a setting is malformed; the message names it and the variable that sets it.
    """
    from pydantic import ValidationError

    from deploy.errors import ConfigError

    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist; pass an existing TOML file")
    try:
        if config_file is not None:
            bound = type(
                "FlywheelSettingsFromFile",
                (FlywheelSettings,),
                {"model_config": {**FlywheelSettings.model_config, "toml_file": config_file}},
            )
            settings: FlywheelSettings = bound(**overrides)
            return settings
        return FlywheelSettings(**overrides)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from e


def env_var_for(location: tuple[str | int, ...]) -> str:
    """The variable that sets a field: ("kafka", "port") -> FLYWHEEL_KAFKA__PORT."""
    parts = [str(p).upper() for p in location if not isinstance(p, int)]
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


def _explain(error: Any) -> str:
    lines = ["invalid settings:"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        lines.append(
            f"  {field}: {item['msg']} (set it with {env_var_for(item['loc'])} "
            f"or [{'.'.join(str(p) for p in item['loc'][:-1]) or 'top level'}] in flywheel.toml)"
        )
    return "\n".join(lines)


def masked_dump(settings: FlywheelSettings) -> dict[str, Any]:
    """Settings as plain data with every secret replaced by asterisks."""
    masked: dict[str, Any] = _plain(
        settings.model_dump(mode="python"),
        secret=lambda v: "********" if v.get_secret_value() else "",
    )
    return masked


#: The environment variable through which a parent hands its settings to a child process.
SETTINGS_ENV = "FLYWHEEL_SETTINGS_JSON"


def settings_to_json(settings: FlywheelSettings) -> str:
    """The settings as JSON for a child process: secrets revealed, state_dir absolute.

    The child's environment is readable only by the same user, like the state folder.
    """
    data = _plain(settings.model_dump(mode="python"), secret=lambda v: v.get_secret_value())
    data["state_dir"] = str(settings.state_path)
    return json.dumps(data)


def settings_from_json(raw: str) -> FlywheelSettings:
    """Rebuild the exact settings `settings_to_json` wrote.

    Raises:
        ConfigError: the JSON does not describe valid settings.
    """
    return load_settings(**json.loads(raw))


def _plain(value: Any, *, secret: Callable[[SecretStr], Any]) -> Any:
    if isinstance(value, SecretStr):
        return secret(value)
    if isinstance(value, dict):
        return {k: _plain(v, secret=secret) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, secret=secret) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
