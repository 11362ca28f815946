"""Trainer benchmarks: our packed LoRA loop against HF Trainer + peft, and data-to-model latency.

    .venv/bin/python -m bench.bench_trainer [--runs 3] [--steps 40] [--quick-base] [--no-latency]
        [--replay-compare SHARE] [--port-offset N]

Throughput: the same base model, the same chatterbot-corpus pairs, the same maximum sequence
length, the same batch size (rows per step) and the same LoRA config, in the same process,
alternating our loop and `transformers.Trainer`; tokens/s counts real (non-padding) tokens
over the training steps. HF Trainer gets the usual per-example padding to the longest in
the batch (DataCollator style); our loop packs examples into full rows.

Latency: a one-hour window of chat turns is written to the embedded ClickHouse of a
private local stack (ports +23000, `--port-offset`), then the clock runs from the window's close
(`run_window` called) to the adapter published (repository version written, row
recorded, ModelPublished acknowledged by Kafka), on the default trainer and gate settings.
With `--replay-compare SHARE` each run also trains a window with that `replay_share`, to
show what replay does to forgetting and to the gate's verdict.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import median, write_section
from deploy.settings import FlywheelSettings, TrainerSettings

PORT_OFFSET = 23000
WINDOW_PAIRS = 240
SEQ = 128
BATCH = 8


def _pairs(n: int) -> list[Any]:
    from trainer.corpus import load_pairs
    from trainer.packing import TextExample

    return [TextExample(p.prompt, p.response) for p in load_pairs()[:n]]


def ours(base: Path, examples: list[Any], steps: int, trainer: TrainerSettings) -> float:
    from trainer.lora import train_adapter
    from trainer.model import choose_device, load_tokenizer
    from trainer.packing import pack_examples

    tokenizer = load_tokenizer(base)
    train = pack_examples(tokenizer, examples, sequence_length_tokens=SEQ)
    val = pack_examples(tokenizer, examples[:16], sequence_length_tokens=SEQ)
    with tempfile.TemporaryDirectory() as run_dir:
        result = train_adapter(base, train, val, trainer=trainer, placement=choose_device("auto"),
                               run_dir=Path(run_dir), max_steps=steps)
    return result.tokens_per_s


def hf_trainer(base: Path, examples: list[Any], steps: int, trainer: TrainerSettings) -> float:
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from trainer.lora import lora_model
    from trainer.model import load_tokenizer
    from trainer.packing import encode

    tokenizer = load_tokenizer(base)
    rows = [{"input_ids": ids[:SEQ], "labels": labels[:SEQ]}
            for ids, labels, _w in encode(tokenizer, examples)]
    counted = {"tokens": 0}
    pad = tokenizer.pad_token_id

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        counted["tokens"] += sum(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [pad] * (width - len(b["input_ids"])) for b in batch]
        labels = [b["labels"] + [-100] * (width - len(b["labels"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (width - len(b["input_ids"])) for b in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}

    cuda = torch.cuda.is_available()
    model = lora_model(AutoModelForCausalLM.from_pretrained(
        str(base), dtype=torch.bfloat16 if cuda else torch.float32), trainer)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH,
            learning_rate=trainer.learning_rate, warmup_steps=trainer.warmup_steps,
            save_strategy="no", report_to=[], logging_steps=10_000, disable_tqdm=True,
            use_cpu=not cuda, bf16=cuda, dataloader_num_workers=0, seed=trainer.seed,
            remove_unused_columns=False,
        )
        hf = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        metrics = hf.train().metrics
    return counted["tokens"] / metrics["train_runtime"]


def throughput(base: Path, *, runs: int, steps: int) -> tuple[list[float], list[float]]:
    trainer = TrainerSettings(batch_size=BATCH, sequence_length_tokens=SEQ, max_steps=steps,
                              max_epochs=1000, eval_every_steps=10_000,
                              checkpoint_every_steps=10_000, lora_rank=8, lora_dropout=0.0)
    examples = _pairs(2000)
    ours_tps, hf_tps = [], []
    for i in range(runs):
        ours_tps.append(ours(base, examples, steps, trainer))
        hf_tps.append(hf_trainer(base, examples, steps, trainer))
        print(f"run {i + 1}: ours {ours_tps[-1]:,.0f} tokens/s, HF Trainer {hf_tps[-1]:,.0f}")
    return ours_tps, hf_tps


@dataclass(frozen=True)
class LatencyRun:
    """One window, closed -> gate verdict (and adapter published when it passed)."""

    replay_share: float
    seconds: float
    published: bool
    new_ratio: float
    """Candidate / served perplexity on the window's validation split."""
    regression_ratio: float
    """Candidate / served perplexity on the regression set (the gate allows 1 + tolerance)."""


def latency(base: Path, *, runs: int, replay_shares: tuple[float, ...],
            port_offset: int = PORT_OFFSET) -> list[LatencyRun]:
    """`runs` windows per replay share, on the default trainer and gate settings."""
    from deploy.clickhouse.client import get_client
    from deploy.local.stack import build_stack
    from deploy.warehouse import migrate
    from streams.topics import ensure_topics
    from tests.trainer.synthetic import billing_pairs
    from trainer.corpus import Pair
    from trainer.pipeline import run_window

    out: list[LatencyRun] = []
    with tempfile.TemporaryDirectory() as state:
        d = FlywheelSettings()
        settings = FlywheelSettings(
            state_dir=Path(state),
            kafka=d.kafka.model_copy(update={"port": d.kafka.port + port_offset,
                                             "controller_port": d.kafka.controller_port
                                             + port_offset}),
            clickhouse=d.clickhouse.model_copy(update={"port": d.clickhouse.port + port_offset}),
            model=d.model.model_copy(update={"base_model_path": base}),
            trainer=TrainerSettings(max_steps=60, eval_every_steps=20, eval_generations=8),
        )
        stack = build_stack(settings)
        try:
            stack.up(["clickhouse", "kafka"])
            ensure_topics(settings)
            admin = get_client(settings, database="default")
            migrate(admin, settings)
            client = get_client(settings)
            hour = 0
            for run in range(runs):
                # Alternate the order so neither share always runs first.
                shares = replay_shares if run % 2 == 0 else tuple(reversed(replay_shares))
                for share in shares:
                    start = datetime(2034, 1, 1, tzinfo=UTC) + timedelta(hours=hour)
                    hour += 1
                    # A topic the base never saw (templated billing questions): the shift a
                    # window brings when users start asking about something new.
                    pairs = [Pair("billing", prompt, answer)
                             for prompt, answer in billing_pairs(WINDOW_PAIRS, seed=hour)]
                    _write_window(client, settings, pairs, start=start, tag=f"h{hour}")
                    tuned = settings.model_copy(update={"trainer": settings.trainer.model_copy(
                        update={"replay_share": share})})
                    started = time.perf_counter()
                    report = run_window(client, tuned, start, start + timedelta(hours=1))
                    seconds = time.perf_counter() - started
                    out.append(LatencyRun(
                        share, seconds, report.published is not None,
                        report.candidate.perplexity_new / report.served.perplexity_new,
                        report.candidate.perplexity_regression
                        / report.served.perplexity_regression))
                    outcome = (f"published v{report.published.version}" if report.published
                               else "rejected")
                    print(f"latency run {run + 1}, replay {share:g}: {seconds:.1f} s, "
                          f"{outcome} ({report.verdict.reason}); phases {report.timings_s}")
            client.close()
            admin.close()
        finally:
            stack.down()
    return out


def _write_window(client: Any, settings: FlywheelSettings, pairs: list[Any], *,
                  start: datetime, tag: str) -> None:
    rows = []
    for i, p in enumerate(pairs):
        ts = start + timedelta(seconds=i)
        rows.append([_uuid(), f"{tag}c{i // 2}", 2 * (i % 2), "user", p.prompt, p.topic, ts,
                     "acme"])
        rows.append([_uuid(), f"{tag}c{i // 2}", 2 * (i % 2) + 1, "assistant", p.response,
                     p.topic, ts, "acme"])
    client.insert(f"{settings.clickhouse.database}.chat_turns", rows,
                  column_names=["event_id", "conversation_id", "turn_index", "role", "text",
                                "topic", "ts", "tenant"])


def replay_table(results: list[LatencyRun], *, tolerance: float) -> list[str]:
    """Markdown rows: per replay share, how often the gate published and the median ratios."""
    lines = ["| replay_share | published | new-data perplexity, candidate/served (median) | "
             f"regression perplexity, candidate/served (median; gate allows {1 + tolerance:.2f})"
             " | latency s (median) |", "|---|---|---|---|---|"]
    for share in sorted({r.replay_share for r in results}, reverse=True):
        rs = [r for r in results if r.replay_share == share]
        lines.append(
            f"| {share:g} | {sum(r.published for r in rs)}/{len(rs)} | "
            f"{median([r.new_ratio for r in rs]):.3f} | "
            f"{median([r.regression_ratio for r in rs]):.3f} "
            f"({', '.join(f'{r.regression_ratio:.3f}' for r in rs)}) | "
            f"{median([r.seconds for r in rs]):.1f} |")
    return lines


def _uuid() -> Any:
    import uuid

    return uuid.uuid4()


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick-base", action="store_true",
                        help="Use the --quick base (built here) instead of the default one.")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--port-offset", type=int, default=PORT_OFFSET,
                        help="Added to the private stack's default ports (latency runs).")
    parser.add_argument("--replay-compare", type=float, default=None, metavar="SHARE",
                        help="Also train each latency window with trainer.replay_share SHARE.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = FlywheelSettings()
    from trainer.bootstrap import BootstrapConfig, bootstrap

    if args.quick_base:
        base = settings.cache_dir / "base-model-quick"
        bootstrap(base, config=BootstrapConfig.quick())
    else:
        base = settings.base_model_path()
        bootstrap(base)  # reused when already built
    ours_tps, hf_tps = throughput(base, runs=args.runs, steps=args.steps)
    lines = [
        f"Command: `.venv/bin/python -m bench.bench_trainer --runs {args.runs} "
        f"--steps {args.steps}{' --quick-base' if args.quick_base else ''}"
        f"{f' --replay-compare {args.replay_compare:g}' if args.replay_compare is not None else ''}"
        f"{f' --port-offset {args.port_offset}' if args.port_offset != PORT_OFFSET else ''}"
        f"{' --no-latency' if args.no_latency else ''}`; base "
        f"`{base.name}`, LoRA r=8 (peft default targets), sequence {SEQ}, batch {BATCH} rows, "
        f"{args.steps} steps, {args.threads} torch threads, chatterbot-corpus English pairs.",
        "",
        "| loop | tokens/s (median) | runs |",
        "|---|---|---|",
        f"| ours (packed) | {median(ours_tps):,.0f} | {', '.join(f'{v:,.0f}' for v in ours_tps)} |",
        f"| HF Trainer + peft (padded) | {median(hf_tps):,.0f} | "
        f"{', '.join(f'{v:,.0f}' for v in hf_tps)} |",
        "",
        f"Speed-up: {median(ours_tps) / median(hf_tps):.2f}x (tokens/s counts real tokens only).",
    ]
    if not args.no_latency:
        default_share = TrainerSettings().replay_share
        shares = ((default_share, args.replay_compare) if args.replay_compare is not None
                  else (default_share,))
        results = latency(base, runs=args.runs, replay_shares=shares,
                          port_offset=args.port_offset)
        headline = [r.seconds for r in results if r.replay_share == default_share]
        published = [r for r in results if r.replay_share == default_share and r.published]
        lines += ["", f"Data-to-model latency ({len(headline)} one-hour windows of a topic the "
                      "base never saw, each from its close to the gate's verdict and, when it "
                      "passes, the adapter published; embedded ClickHouse and Kafka, default "
                      "trainer and gate settings, 60 steps max): median "
                      f"{median(headline):.1f} s (runs: "
                      f"{', '.join(f'{s:.1f}' for s in headline)}); "
                      f"{len(published)}/{len(headline)} published."]
        if args.replay_compare is not None:
            lines += ["", "Replay against forgetting (same windows, same stack, alternating "
                          "order; `trainer.replay_share` of the training mix drawn from the "
                          "base's corpus, never from the regression set):", "",
                      *replay_table(results, tolerance=TrainerSettings().regression_tolerance)]
    write_section("Trainer", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
