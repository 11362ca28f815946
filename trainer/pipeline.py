"""One training run end to end: window -> LoRA adapter -> gate -> publish (or not)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.distributed import SINGLE, Distributed
from trainer.errors import TrainerConfigError

if TYPE_CHECKING:
    from deploy.settings import FlywheelSettings, TrainerSettings
    from schemas.platform import ModelPublished
    from trainer.evaluate import EvalData, Metrics
    from trainer.gate import Verdict
    from trainer.lora import TrainResult
    from trainer.model import Placement
    from trainer.window import Window

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]


@dataclass
class RunReport:
    """What one run did, for the CLI and the benchmarks."""

    window: Window
    training: TrainResult
    candidate: Metrics
    served: Metrics
    served_version: int | None
    verdict: Verdict
    published: ModelPublished | None
    timings_s: dict[str, float] = field(default_factory=dict)


def preflight(settings: FlywheelSettings, start: datetime, end: datetime) -> None:
    """Every check that needs no data, before any work starts.

    Raises:
        TrainerConfigError: the window is empty, the device cannot be used, or the
            hyperparameter search lists an invalid value.
        BaseModelMissingError: the base model folder is missing or incomplete.
    """
    from trainer.model import check_base_model, choose_device
    from trainer.window import check_bounds

    check_bounds(start, end)
    check_base_model(settings.base_model_path())
    choose_device(settings.trainer.device)
    if any(r < 1 for r in settings.trainer.search_ranks):
        raise TrainerConfigError("trainer.search_ranks must all be at least 1")
    if any(lr <= 0 for lr in settings.trainer.search_learning_rates):
        raise TrainerConfigError("trainer.search_learning_rates must all be positive")


def run_window(
    client: Any, settings: FlywheelSettings, start: datetime, end: datetime, *,
    publish_if_passed: bool = True, shuffle_targets: bool = False,
    progress: ProgressFn | None = None, distributed: Distributed = SINGLE,
) -> RunReport:
    """Train on `[start, end)`, evaluate against the served version, publish if it passes.

    `shuffle_targets` trains on `sabotage`d targets: a deliberately bad candidate, for
    testing that the gate rejects it. Under torchrun every rank calls it with its
    `distributed` handle: rank 0 reads the window (the others may pass `client=None`),
    all ranks train, rank 0 evaluates and publishes, and every rank returns its report.

    Raises:
        TrainerConfigError, BaseModelMissingError: as `preflight` (before any work).
        EmptyWindowError: the window has nothing to train on.
        PublishError: the candidate passed but could not be published.
    """
    import torch

    from trainer.corpus import regression_pairs
    from trainer.evaluate import eval_data
    from trainer.model import choose_device, load_tokenizer
    from trainer.packing import TextExample, pack_examples
    from trainer.replay import with_replay
    from trainer.search import train_with_search
    from trainer.window import read_window

    preflight(settings, start, end)
    trainer = settings.trainer
    if trainer.torch_threads:
        torch.set_num_threads(trainer.torch_threads)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    placement = distributed.place(choose_device(trainer.device))
    base_path = settings.base_model_path()
    window = distributed.run_on_main(lambda: read_window(client, settings, start, end))
    if progress:
        progress("data", 1, 1)
    tokenizer = load_tokenizer(base_path)
    train_examples = [e.text_example() for e in window.train]
    if shuffle_targets:
        train_examples = sabotage(train_examples, seed=trainer.seed)
    train_examples = with_replay(train_examples, share=trainer.replay_share, seed=trainer.seed)
    seq = trainer.sequence_length_tokens
    train = pack_examples(tokenizer, train_examples, sequence_length_tokens=seq)
    validation = [e.text_example() for e in window.validation]
    data = eval_data(
        tokenizer, validation=validation,
        regression=[TextExample(p.prompt, p.response) for p in regression_pairs()],
        negatives=[TextExample(e.prompt, e.response) for e in window.negatives],
        corrections=[(e.prompt, e.target) for e in window.corrections], trainer=trainer,
    )
    timings["data_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    run_dir = _run_dir(settings, window.snapshot.content_sha256, shuffle_targets)
    result = train_with_search(base_path, train, data.new, trainer=trainer,
                               placement=placement, run_dir=run_dir, progress=progress,
                               distributed=distributed)
    timings["train_s"] = time.perf_counter() - clock
    return distributed.run_on_main(lambda: _gate_and_publish(
        client, settings, window=window, result=result, data=data, tokenizer=tokenizer,
        placement=placement, publish_if_passed=publish_if_passed, timings=timings,
        progress=progress))


def _gate_and_publish(
    client: Any, settings: FlywheelSettings, *, window: Window, result: TrainResult,
    data: EvalData, tokenizer: Any, placement: Placement, publish_if_passed: bool,
    timings: dict[str, float], progress: ProgressFn | None,
) -> RunReport:
    """Evaluate the candidate and the served version, record the verdict, publish on a pass.

    Raises:
        PublishError: the candidate passed but could not be published.
    """
    from inference.repository import next_version
    from trainer.evaluate import evaluate
    from trainer.gate import comparison_metrics, decide, record_evaluation
    from trainer.model import load_with_adapter
    from trainer.publish import publish, served_version

    trainer = settings.trainer
    base_path = settings.base_model_path()
    clock = time.perf_counter()
    served = served_version(client, settings)
    candidate_model = load_with_adapter(base_path, placement, result.adapter_dir)
    candidate = evaluate(candidate_model, tokenizer, data, trainer=trainer, placement=placement)
    del candidate_model
    if progress:
        progress("evaluation", 1, 2)
    served_model = load_with_adapter(base_path, placement,
                                     served.adapter_dir if served else None)
    served_metrics = evaluate(served_model, tokenizer, data, trainer=trainer,
                              placement=placement)
    del served_model
    if progress:
        progress("evaluation", 2, 2)
    base_regression = (served_metrics.perplexity_regression if served is None
                       else base_regression_perplexity(base_path, placement, data, trainer))
    verdict = decide(candidate, served_metrics, trainer, base_regression=base_regression)
    timings["evaluate_s"] = time.perf_counter() - clock

    candidate_version = next_version(settings.triton_model_repository(), settings.model.name)
    candidate_version = max(candidate_version, 2)  # version 1 is the bare base
    record_evaluation(client, settings, window=window, candidate_version=candidate_version,
                      baseline_version=served.version if served else None,
                      candidate=candidate, served=served_metrics, verdict=verdict,
                      base_regression=base_regression)
    published = None
    if verdict.passed and publish_if_passed:
        clock = time.perf_counter()
        metrics = comparison_metrics(candidate, served_metrics, base_regression=base_regression)
        published = publish(client, settings, adapter_dir=result.adapter_dir,
                            snapshot=window.snapshot, metrics=metrics,
                            previous_version=served.version if served else None)
        timings["publish_s"] = time.perf_counter() - clock
    return RunReport(window, result, candidate, served_metrics,
                     served.version if served else None, verdict, published, timings)


#: The bare base's regression perplexity per (base weights, device, packing): both are
#: fixed while `watch` runs, so the base is measured once, not at every window.
_BASE_REGRESSION: dict[tuple[str, int, str, int], float] = {}


def base_regression_perplexity(base_path: Path, placement: Placement, data: EvalData,
                               trainer: TrainerSettings) -> float:
    """The bare base's perplexity on the regression set, measured once per base."""
    from trainer.evaluate import perplexity
    from trainer.model import load_with_adapter

    stamp = max((f.stat().st_mtime_ns for f in base_path.iterdir() if f.is_file()), default=0)
    key = (str(base_path.resolve()), stamp, str(placement.device),
           trainer.sequence_length_tokens)
    if key not in _BASE_REGRESSION:
        model = load_with_adapter(base_path, placement, None)
        _BASE_REGRESSION[key] = perplexity(model, data.regression, trainer=trainer,
                                           placement=placement)
        del model
    return _BASE_REGRESSION[key]


def sabotage(examples: list[Any], *, seed: int) -> list[Any]:
    """Each prompt paired with another example's answer, its words shuffled (seeded)."""
    import random

    from trainer.packing import TextExample

    rng = random.Random(seed)
    targets = [e.target for e in examples]
    targets = targets[1:] + targets[:1]
    out = []
    for example, target in zip(examples, targets, strict=True):
        words = target.split()
        rng.shuffle(words)
        out.append(TextExample(example.prompt, " ".join(words), example.weight))
    return out


def _run_dir(settings: FlywheelSettings, content_sha256: str, sabotaged: bool) -> Path:
    # Same data and same hyperparameters -> same folder, so a restarted run resumes.
    import hashlib

    hyper = settings.trainer.model_dump_json(exclude={
        "runs_dir", "watch_poll_interval_s", "distributed_strategy", "distributed_timeout_s"})
    key = hashlib.sha256(f"{content_sha256}:{hyper}:{sabotaged}".encode()).hexdigest()[:16]
    root = settings.trainer.runs_dir or settings.state_path / "trainer" / "runs"
    return root.expanduser() / settings.model.name / key
