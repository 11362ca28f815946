"""Trainer benchmarks: our packed LoRA loop against HF Trainer + peft, and data-to-model latency.

    .venv/bin/python -m bench.bench_trainer [--runs 3] [--steps 40] [--quick-base] [--no-latency]

Throughput: the same base model, the same chatterbot-corpus pairs, the same maximum sequence
length, the same batch size (rows per step) and the same LoRA config, in the same process,
alternating our loop and `transformers.Trainer`; tokens/s counts real (non-padding) tokens
over the training steps. HF Trainer gets the usual per-example padding to the longest in
the batch (DataCollator style); our loop packs examples into full rows.

Latency: a one-hour window of chat turns is written to the embedded ClickHouse of a
private local stack (ports +23000), then the clock runs from the window's close
(`run_window` called) to the adapter published (repository version written, row
recorded, ModelPublished acknowledged by Kafka).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import median, write_section
from deploy.settings import FlywheelSettings, TrainerSettings

PORT_OFFSET = 23000
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


def latency(base: Path, *, runs: int) -> list[float]:
    from deploy.clickhouse.client import get_client
    from deploy.local.stack import build_stack
    from deploy.warehouse import migrate
    from streams.topics import ensure_topics
    from trainer.corpus import load_pairs
    from trainer.pipeline import run_window

    seconds = []
    with tempfile.TemporaryDirectory() as state:
        d = FlywheelSettings()
        settings = FlywheelSettings(
            state_dir=Path(state),
            kafka=d.kafka.model_copy(update={"port": d.kafka.port + PORT_OFFSET,
                                             "controller_port": d.kafka.controller_port
                                             + PORT_OFFSET}),
            clickhouse=d.clickhouse.model_copy(update={"port": d.clickhouse.port + PORT_OFFSET}),
            model=d.model.model_copy(update={"base_model_path": base}),
            trainer=TrainerSettings(max_steps=60, eval_every_steps=20, eval_generations=8,
                                    regression_tolerance=1.0),
        )
        stack = build_stack(settings)
        try:
            stack.up(["clickhouse", "kafka"])
            ensure_topics(settings)
            admin = get_client(settings, database="default")
            migrate(admin, settings)
            client = get_client(settings)
            pairs = [p for p in load_pairs() if p.topic in ("computers", "tech_support")]
            for run in range(runs):
                start = datetime(2034, 1, 1, tzinfo=UTC) + timedelta(hours=run)
                rows = []
                for i, p in enumerate(pairs):
                    ts = start + timedelta(seconds=i)
                    rows.append([_uuid(), f"r{run}c{i // 2}", 2 * (i % 2), "user", p.prompt,
                                 p.topic, ts, "acme"])
                    rows.append([_uuid(), f"r{run}c{i // 2}", 2 * (i % 2) + 1, "assistant",
                                 p.response, p.topic, ts, "acme"])
                client.insert(f"{settings.clickhouse.database}.chat_turns", rows,
                              column_names=["event_id", "conversation_id", "turn_index", "role",
                                            "text", "topic", "ts", "tenant"])
                started = time.perf_counter()
                report = run_window(client, settings, start, start + timedelta(hours=1))
                seconds.append(time.perf_counter() - started)
                outcome = (f"published v{report.published.version}" if report.published
                           else "rejected")
                print(f"latency run {run + 1}: {seconds[-1]:.1f} s, {outcome} "
                      f"({report.verdict.reason}); phases {report.timings_s}")
            client.close()
            admin.close()
        finally:
            stack.down()
    return seconds


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
        f"--steps {args.steps}{' --quick-base' if args.quick_base else ''}`; base "
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
        seconds = latency(base, runs=args.runs)
        lines += ["", f"Data-to-model latency (window closed -> adapter published, embedded "
                      f"ClickHouse and Kafka, 60 steps max): median {median(seconds):.1f} s "
                      f"(runs: {', '.join(f'{s:.1f}' for s in seconds)})."]
    write_section("Trainer", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
