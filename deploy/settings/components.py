"""Settings of Flywheel's own components: trainer, streams, inference, monitoring."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from deploy.settings._base import Port, _check_port, _Section


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
    retrain_policy: Literal["every_window", "on_drift"] = Field(
        default="every_window",
        description="`every_window`: `watch` trains on each closed window with "
        "min_new_examples; `on_drift`: only the first adapter that way, then only when the "
        "user traffic drifted (an embedding or feature drift alert, or a retrain request).",
    )
    regression_tolerance: float = Field(
        default=0.05, ge=0,
        description="Allowed relative perplexity rise on the regression set against the "
        "served version.",
    )
    base_regression_tolerance: float = Field(
        default=0.15, ge=0,
        description="Allowed relative perplexity rise on the regression set against the bare "
        "base model: the bound on forgetting over all versions, which regression_tolerance "
        "alone would let grow by that much with each version.",
    )
    min_improvement: float = Field(
        default=0.0, ge=0, description="Required relative perplexity drop on the new data."
    )
    replay_share: float = Field(
        default=0.0, ge=0, lt=1,
        description="Share of each training mix replayed from the embedded base's corpus "
        "(against forgetting); 0 (off) because on the embedded base it raised regression "
        "perplexity instead (BENCHMARKS.md, Trainer).",
    )
    toxicity_tolerance: float = Field(default=0.02, ge=0, description="Allowed toxicity rise.")
    toxicity_alpha: float = Field(
        default=0.05, gt=0, le=1,
        description="A toxicity rise past the tolerance fails the gate only when chance "
        "explains it with at most this probability (one-sided Fisher exact test on the two "
        "models' counts of toxic generations); 1 gates on the rates alone. One flagged "
        "generation of 16 is 6% and the corpus's own answers score 1% toxic, so rates alone "
        "reject on noise.")
    eval_generations: int = Field(default=16, ge=0, description="Generations for BLEU/toxicity.")
    max_new_tokens: int = Field(default=32, ge=1)
    runs_dir: Path | None = Field(
        default=None, description="Checkpoints and run files; default <state_dir>/trainer/runs."
    )
    distributed_strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="Under torchrun: `ddp` copies the base to every process; `fsdp` shards it "
        "(for bases too large for one device).",
    )
    distributed_timeout_s: float = Field(
        default=1800.0, gt=0,
        description="Under torchrun: longest wait on the other processes (rank 0 evaluating).",
    )


class StreamsSettings(_Section):
    """The stream processors: cleaning limits, safety thresholds and lists, caps, join, sink."""

    consumer_group: str = Field(default="flywheel-streams", min_length=1)
    session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="A dead worker's partitions move after this long."
    )
    poll_batch_max: int = Field(
        default=500, ge=1, description="Records read per poll: a batch goes through the "
        "pipeline before the next is read, so larger batches add latency (2,000 gave a p99 "
        "of 1.8-2.4 s from produce to ClickHouse at 2,000 events/s, 500 gave 1.4-1.7 s).")
    min_chars: int = Field(default=1, ge=1, description="Shorter cleaned turns are `empty`.")
    max_chars: int = Field(default=8_000, ge=16, description="Longer cleaned turns: `too_long`.")
    max_record_bytes: int = Field(default=262_144, ge=1024, description="Raw record size cap.")
    pseudonym_key: SecretStr = Field(
        default=SecretStr("flywheel-dev-pseudonym-key"), description="HMAC key of the "
        "pseudonyms that replace private data in identifiers (an email as tenant or "
        "conversation id): the same value always gives the same pseudonym, so joins hold, "
        "and without the key nobody can confirm a guess. Set your own in production.")
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
    sink_retry_max: int = Field(
        default=8, ge=0, description="Retries of an insert ClickHouse refuses while it answers "
        "(before the batch is bisected and the rows it still refuses are quarantined); while "
        "ClickHouse is unreachable the worker pauses and retries without limit.")
    sink_backoff_max_s: float = Field(
        default=5.0, gt=0, description="Longest wait between retries of an insert or commit.")
    join_max_pending: int = Field(
        default=5_000, ge=1, description="Feedback events waiting for their turn; feedback "
        "whose turn is unknown while this many wait is quarantined as `orphan_feedback`.")
    join_lookup_chunk_ids: int = Field(
        default=1_000, ge=1, le=10_000, description="Ids per warehouse lookup of the "
        "waiting feedback's turns (keeps each query well under ClickHouse's 256 KiB limit).")
    join_lookup_interval_s: float = Field(
        default=5.0, ge=0, description="Feedback already looked up waits this long before "
        "its turn is looked up again; new feedback is looked up at the next flush.")
    shutdown_grace_s: float = Field(
        default=30.0, gt=0, description="On stop, how long the last flush may wait for "
        "Kafka and ClickHouse; past it the worker exits without committing (the records "
        "are read again on restart).")
    workers_processes: int = Field(
        default=0, ge=0, le=64,
        description="Helper processes per worker for the stateless stages (decode, clean, "
        "redact, score); 0 runs them all in the worker's own process.",
    )


class InferenceSettings(_Section):
    """Serving: the Triton model's shape, the hot-swap controller and the OpenAI-style gateway."""

    gateway_host: str = "127.0.0.1"
    gateway_port: Port = 8090
    api_keys: list[SecretStr] = Field(
        default_factory=lambda: [SecretStr("flywheel-dev-key")],
        description="Gateway keys (Authorization: Bearer KEY or X-API-Key: KEY; either one "
        "valid is enough); empty disables auth.",
    )
    tenant: str = Field(default="gateway", min_length=1, description="Tenant on chat events.")
    gateway_producer_name: str = "flywheel-gateway"
    max_new_tokens: int = Field(default=32, ge=1, le=1024, description="When a request says none.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0, le=1)
    request_timeout_s: float = Field(default=30.0, gt=0, description="Gateway -> Triton.")
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024,
        description="Largest request body the gateway reads (413 over it, before parsing).",
    )
    max_prompt_chars: int = Field(
        default=32_000, ge=256,
        description="Largest rendered prompt, all messages together (400 over it), so one "
        "request cannot hold Triton for seconds.",
    )
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After on a 503.")
    ack_timeout_s: float = Field(
        default=10.0, gt=0,
        description="Answer /v1/feedback with 503 if Kafka has not acknowledged by then.",
    )
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
    serving_check_interval_s: float = Field(
        default=1.0, gt=0,
        description="How often the controller asks Triton whether the model is ready, and "
        "loads the live version again when it is not (a Triton restart loses it).",
    )

    _ports = field_validator("gateway_port")(_check_port)


class MonitoringSettings(_Section):
    """Drift detectors, latency thresholds, the alert receiver and automatic actions."""

    metrics_host: str = "127.0.0.1"
    metrics_port: Port = Field(default=9310, description="`flywheel monitor run` /metrics.")
    receiver_host: str = "127.0.0.1"
    receiver_port: Port = Field(default=9311, description="`flywheel alerts receiver`.")
    evaluation_interval_s: float = Field(
        default=30.0, gt=0,
        description="Between evaluations; the drift rules' `for:` (monitoring/rules/drift.yml) "
        "is 1.5 intervals, so an embedding drift alert is two evaluations in a row.",
    )
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
        description="Significance of each test (the embedding scan's sub-windows share it, "
        "Bonferroni); one evaluation every 30 s is 2,880 tests a day.",
    )
    permutations: int = Field(default=500, ge=20, description="MMD permutation-test draws.")
    embedding_scan_fractions: tuple[float, ...] = Field(
        default=(1.0, 0.5, 0.25),
        description="The embedding test also runs on the newest fractions of the current "
        "window (Bonferroni-combined), so a recent topic shift is seen before it fills the "
        "whole window; (1.0,) tests the whole window only.",
    )
    embedding_bandwidth_factor: float = Field(
        default=0.5, gt=0,
        description="The embedding test's squared kernel bandwidth, as a multiple of the "
        "median squared distance (1.0: the median heuristic). 0.5 weighs a new topic's "
        "cluster more: on the drift bench's 10% shift it gave smaller p-values than 1.0 "
        "at each of 6 seeds once the shift was detectable.",
    )
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
    platform_alert_hold_s: float = Field(
        default=3600.0, gt=0,
        description="How long an alert a Flywheel process raises (a refused version, a "
        "dropped canary) stays firing in Alertmanager unless raised again.",
    )

    _ports = field_validator("metrics_port", "receiver_port")(_check_port)

    @field_validator("embedding_scan_fractions")
    @classmethod
    def _check_fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0 < f <= 1 for f in value):
            raise ValueError(
                "monitoring.embedding_scan_fractions must be fractions in (0, 1], e.g. "
                f"[1.0, 0.5, 0.25]; got {list(value)}")
        return value




class DemoSettings(_Section):
    """`flywheel demo`: the simulated users, the topic shift and the time budget."""

    time_budget_s: int = Field(
        default=600, ge=60, description="The run stops with an explanation past this."
    )
    database: str = Field(
        default="flywheel_demo", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="ClickHouse database the demo recreates each run (never your data's).",
    )
    model_prefix: str = Field(
        default="demo", pattern=r"^[a-z][a-z0-9-]{0,30}$",
        description="Each run serves a fresh model named <prefix>-<run id>.",
    )
    requests_per_s: float = Field(default=6.0, gt=0, le=200, description="Chat requests.")
    clients: int = Field(default=4, ge=1, le=64, description="Concurrent simulated users.")
    feedback_share: float = Field(
        default=0.85, ge=0, le=1, description="Share of answers users rate or correct."
    )
    hostile_share: float = Field(
        default=0.05, ge=0, le=1,
        description="Share of extra events sent through the ingest API that are toxic, carry "
        "private data, bait bias, or are malformed.",
    )
    old_topics: list[str] = Field(
        default_factory=lambda: ["greetings", "conversations", "emotion", "ai", "botprofile",
                                 "psychology", "humor", "food", "computers", "gossip"],
        min_length=1, description="chatterbot-corpus topics of the first traffic.",
    )
    new_topics: list[str] = Field(
        default_factory=lambda: ["trivia", "sports", "science", "history", "money"],
        min_length=1,
        description="Topics the traffic shifts to; held out of the demo base model.",
    )
    keep_running: bool = Field(
        default=True, description="Leave the stack and services up after the run, to explore."
    )
