"""Trainer throughput on a GPU: a Llama-style ~1.1B base, bf16, LoRA r=16, sequence 1024.

    python -m bench.bench_trainer_gpu [--runs 3] [--steps 20] [--out FILE]   # on the GPU
    .venv/bin/python -m bench.bench_trainer_gpu --record FILE                 # where BENCHMARKS.md is

Random weights (throughput needs no trained ones) in TinyLlama-1.1B's shape, saved once
to a temporary folder and loaded by both loops from there, like any base. The same
seeded examples (random token ids, lengths uniform in 32..1024) go to:
- our loop (`train_adapter`): packed into full 1024-token rows;
- Hugging Face `Trainer` + peft, the usual way: each example padded to the longest in
  its batch (DataCollator style);
- `Trainer` + peft fed our packed rows, which isolates the loop's own overhead.
Same LoRA config (r=16 on q/k/v/o), batch (rows per step), learning rate, in one process,
alternating. Tokens/s counts real tokens. Model FLOPs utilization uses LoRA's model FLOPs
per real token: 4N for the frozen linear layers (forward, and backward to the
activations only; no weight gradients) plus 12·layers·width·sequence for attention,
against the card's dense bf16 peak (989 TFLOP/s on an H100/H200 SXM).
Writes the "Trainer on GPU" section of BENCHMARKS.md, and with `--out` its body to a file
too; `--record FILE` writes such a file into BENCHMARKS.md (when the GPU machine is not
where the repository lives).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.report import median, write_section
from deploy.settings import TrainerSettings

SECTION = "Trainer on GPU"
SEQ = 1024
BATCH = 8
PEAK_BF16_FLOPS = 989e12
LLAMA: dict[str, Any] = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
         "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
         "max_position_embeddings": 2048}


def build_base(folder: Path) -> int:
    """Save a random-weight Llama in bf16 (with a stand-in tokenizer file); its parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model: Any = LlamaForCausalLM(config)
        model = model.to(torch.bfloat16)
    model.save_pretrained(str(folder))
    # check_base_model wants tokenizer files; these loops feed token ids directly.
    (folder / "tokenizer_config.json").write_text("{}")
    return sum(p.numel() for p in model.parameters())


def examples(n: int, *, seed: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(32, SEQ + 1, (n,), generator=g)
    return [torch.randint(3, LLAMA["vocab_size"], (int(k),), generator=g).tolist()
            for k in lengths]


def packed(rows: list[list[int]]) -> Any:
    from trainer.packing import pack

    return pack([(ids, ids, [1.0] * len(ids)) for ids in rows], sequence_length_tokens=SEQ,
                pad_token_id=0)


def trainer_settings(steps: int) -> TrainerSettings:
    return TrainerSettings(batch_size=BATCH, sequence_length_tokens=SEQ, max_steps=steps,
                           max_epochs=1000, eval_every_steps=10_000, warmup_steps=2,
                           checkpoint_every_steps=10_000, lora_rank=16, lora_alpha=32,
                           lora_dropout=0.0, device="cuda",
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def ours(base: Path, data: Any, steps: int) -> float:
    from trainer.lora import train_adapter
    from trainer.model import choose_device

    val = type(data)(data.input_ids[:BATCH], data.labels[:BATCH], data.weights[:BATCH],
                     0, 0)
    with tempfile.TemporaryDirectory() as run_dir:
        result = train_adapter(base, data, val, trainer=trainer_settings(steps),
                               placement=choose_device("cuda"), run_dir=Path(run_dir))
    return result.tokens_per_s


def hf(base: Path, rows: list[list[int]], steps: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from trainer.lora import lora_model

    counted = {"tokens": 0}

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        counted["tokens"] += sum(len(b["input_ids"]) for b in batch)
        ids = [b["input_ids"] + [0] * (width - len(b["input_ids"])) for b in batch]
        labels = [b["input_ids"] + [-100] * (width - len(b["input_ids"])) for b in batch]
        mask = [[1] * len(b["input_ids"]) + [0] * (width - len(b["input_ids"])) for b in batch]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask)}

    model = lora_model(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16),
                       trainer_settings(steps))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH,
            learning_rate=2e-3, warmup_steps=2, save_strategy="no", report_to=[],
            logging_steps=10_000, disable_tqdm=True, bf16=True, dataloader_num_workers=0,
            seed=0, remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args,
                          train_dataset=[{"input_ids": r} for r in rows],
                          data_collator=collate)
        metrics = trainer.train().metrics
    del model, trainer
    torch.cuda.empty_cache()
    return counted["tokens"] / metrics["train_runtime"]


def flops_per_token(parameters: int) -> float:
    """LoRA training FLOPs per token: 4N for every matmul weight (all but the input
    embedding table, a lookup) plus 12 * layers * width * sequence for attention."""
    matmul = parameters - LLAMA["vocab_size"] * LLAMA["hidden_size"]
    attention = 12 * LLAMA["num_hidden_layers"] * LLAMA["hidden_size"] * SEQ
    return 4 * matmul + attention


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--record", type=Path, default=None,
                        help="Write a body saved with --out into BENCHMARKS.md, and stop.")
    args = parser.parse_args()
    if args.record:
        body = args.record.read_text()
        device = body.split(" on one ", 1)[1].split(";", 1)[0] if " on one " in body else "GPU"
        write_section(SECTION, body, measured_on=f"one {device} (a lent GPU machine)")
        return
    rows = examples(BATCH * args.steps * 2, seed=0)
    data = packed(rows)
    packed_rows = [r[r != 0].tolist() for r in data.input_ids]  # the same rows, for HF
    results: dict[str, list[float]] = {"ours": [], "hf": [], "hf_packed": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "llama-1.1b"
        parameters = build_base(base)
        torch.cuda.empty_cache()
        for i in range(args.runs):
            results["ours"].append(ours(base, data, args.steps))
            results["hf"].append(hf(base, rows, args.steps))
            results["hf_packed"].append(hf(base, packed_rows, args.steps))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in results.items()),
                  flush=True)
    per_token = flops_per_token(parameters)
    device = torch.cuda.get_device_name()
    names = {"ours": "ours (packed rows)", "hf": "HF Trainer + peft (padded per batch)",
             "hf_packed": "HF Trainer + peft (our packed rows)"}
    lines = [
        f"Command: `python -m bench.bench_trainer_gpu --runs {args.runs} --steps {args.steps}` "
        f"on one {device}; Llama-style base with random weights in TinyLlama-1.1B's shape "
        f"({parameters / 1e9:.2f}B parameters), bf16, LoRA r=16 on q/k/v/o, sequence {SEQ}, "
        f"batch {BATCH} rows, {args.steps} steps per run, torch {torch.__version__}; examples "
        "of random token ids with lengths uniform in 32..1024.",
        "",
        "| loop | tokens/s (median) | MFU | runs |",
        "|---|---|---|---|",
    ]
    for key, name in names.items():
        tps = median(results[key])
        lines.append(f"| {name} | {tps:,.0f} | {tps * per_token / PEAK_BF16_FLOPS:.1%} | "
                     f"{', '.join(f'{v:,.0f}' for v in results[key])} |")
    lines += ["", f"Speed-up over HF Trainer + peft: "
                  f"{median(results['ours']) / median(results['hf']):.2f}x as usually fed, "
                  f"{median(results['ours']) / median(results['hf_packed']):.2f}x on the same "
                  f"packed rows. MFU: {per_token / 1e9:.2f} GFLOP per real token (LoRA: 4N + "
                  f"attention) against {PEAK_BF16_FLOPS / 1e12:.0f} TFLOP/s dense bf16."]
    body = "\n".join(lines)
    print(body)
    if args.out:
        args.out.write_text(body + "\n")
    write_section(SECTION, body, measured_on=f"one {device}")


if __name__ == "__main__":
    main()
