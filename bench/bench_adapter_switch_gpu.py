"""Switching LoRA adapters in a serving model on a GPU: our in-place merge against peft.

    python -m bench.bench_adapter_switch_gpu [--switches 9] [--tokens 64] [--out FILE]  # on the GPU
    .venv/bin/python -m bench.bench_adapter_switch_gpu --record FILE          # where BENCHMARKS.md is
    .venv/bin/python -m bench.bench_adapter_switch_gpu --preset tiny          # a CPU smoke run

The Triton model (`inference/triton_model/model.py`) switches versions inside its running
process with `lora_merge`: read the adapter, build `base + scale * B @ A` for each
targeted module, repoint the weights, check one forward pass. This measures that on a
Llama-style base with random weights in TinyLlama-1.1B's shape (fp16, as the model serves
on CUDA), with two LoRA adapters (r=16 on q/k/v/o, random non-zero B) written by peft, and
in the same process the usual alternative: a peft `PeftModel` holding both adapters
(`load_adapter` from disk, then `set_adapter`), which serves the LoRA product unmerged.
Figures, medians over `--switches` alternating switches:
- files on disk -> serving the new adapter: ours (read + merge + install + check) against
  peft (`load_adapter` + `set_adapter`);
- greedy generation of `--tokens` tokens for one prompt, merged against peft unmerged;
- GPU memory the switch machinery adds over the bare base.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECTION = "Adapter switch on GPU"
PRESETS: dict[str, dict[str, Any]] = {
    "tinyllama": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                  "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
                  "max_position_embeddings": 2048},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
             "max_position_embeddings": 256},
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def _lora_merge() -> Any:
    # lora_merge runs inside the Triton stub and imports nothing from Flywheel; load it
    # from its folder the way the stub does.
    folder = Path(__file__).resolve().parent.parent / "inference" / "triton_model"
    sys.path.insert(0, str(folder))
    import lora_merge

    return lora_merge


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(folder: Path, preset: str, device: str) -> tuple[Path, list[Path], int]:
    """A random base and two adapters on disk; returns their folders and the parameters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    with torch.device(device):
        model: Any = LlamaForCausalLM(LlamaConfig(**PRESETS[preset]))
        model = model.to(dtype)
    base = folder / "base"
    model.save_pretrained(str(base))
    params = sum(p.numel() for p in model.parameters())
    adapters = []
    for i in range(2):
        peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS,
                                                      lora_dropout=0.0, bias="none"))
        with torch.no_grad():  # peft starts B at zero (a no-op adapter); make it real
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02 * (i + 1))
        path = folder / f"adapter{i}"
        peft_model.save_pretrained(str(path))
        model = peft_model.unload()
        adapters.append(path)
    del model
    return base, adapters, params


def _generate(model: Any, ids: Any, tokens: int, device: str) -> float:
    import torch

    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                       pad_token_id=0)
    _sync(device)
    return time.perf_counter() - started


def _memory(device: str) -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")


def measure(preset: str, switches: int, tokens: int) -> dict[str, Any]:
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    lora_merge = _lora_merge()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                           "torch": torch.__version__, "preset": preset}
    with tempfile.TemporaryDirectory(prefix="flywheel-switch-") as tmp:
        base, adapters, out["params"] = build(Path(tmp), preset, device)
        ids = torch.randint(1, PRESETS[preset]["vocab_size"], (1, 32), device=device)

        # Ours: a plain model, adapters merged in place.
        model: Any = LlamaForCausalLM.from_pretrained(str(base), dtype=dtype)
        model = model.to(device).eval()
        bare_mb = _memory(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        weights = lora_merge.MergedWeights(model)
        ours, ours_gen = [], []
        for i in range(switches + 1):
            _sync(device)
            started = time.perf_counter()
            deltas = lora_merge.read_deltas(adapters[i % 2], model)
            out["modules"] = len(deltas)
            weights.install(weights.build(deltas))
            with torch.inference_mode():
                logits = model(input_ids=ids).logits
            assert bool(torch.isfinite(logits).all())
            _sync(device)
            if i:  # the first switch also warms up CUDA kernels
                ours.append(time.perf_counter() - started)
            ours_gen.append(_generate(model, ids, tokens, device))
        del deltas  # the serving model drops them once installed
        out["ours_mb"] = _memory(device) - bare_mb
        out["ours_peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 - bare_mb
                               if device == "cuda" else float("nan"))
        del model, weights
        if device == "cuda":
            torch.cuda.empty_cache()

        # Baseline: peft holding the adapters, unmerged.
        model = LlamaForCausalLM.from_pretrained(str(base), dtype=dtype)
        model = model.to(device).eval()
        bare_mb = _memory(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name="a0")
        peft_model.eval()
        peft, peft_gen = [], []
        for i in range(switches + 1):
            name = f"s{i}"
            _sync(device)
            started = time.perf_counter()
            peft_model.load_adapter(str(adapters[i % 2]), adapter_name=name)
            peft_model.set_adapter(name)
            with torch.inference_mode():
                logits = peft_model(input_ids=ids).logits
            assert bool(torch.isfinite(logits).all())
            _sync(device)
            if i:
                peft.append(time.perf_counter() - started)
            peft_gen.append(_generate(peft_model, ids, tokens, device))
            if i:  # keep two adapters resident, as a server switching versions would
                peft_model.delete_adapter(f"s{i - 1}")
        out["peft_mb"] = _memory(device) - bare_mb
        out["peft_peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 - bare_mb
                               if device == "cuda" else float("nan"))
    out.update(ours_ms=[1000 * s for s in ours], peft_ms=[1000 * s for s in peft],
               ours_gen_ms=[1000 * s for s in ours_gen[1:]],
               peft_gen_ms=[1000 * s for s in peft_gen[1:]], tokens=tokens, switches=switches)
    return out


def report(r: dict[str, Any]) -> str:
    med = statistics.median
    ours, peft = med(r["ours_ms"]), med(r["peft_ms"])
    ours_gen, peft_gen = med(r["ours_gen_ms"]), med(r["peft_gen_ms"])
    return f"""Command: `python -m bench.bench_adapter_switch_gpu --switches {r['switches']} --tokens {r['tokens']}` on one {r['device']} (torch {r['torch']}); Llama-style base with random weights in TinyLlama-1.1B's shape ({r['params'] / 1e9:.2f}B parameters), fp16; two peft LoRA adapters, r=16 on q/k/v/o with random non-zero B; alternating switches, medians.

| | ours: merged in place (`lora_merge`, what the Triton model runs) | peft `PeftModel`, unmerged (baseline) | ratio |
|---|---|---|---|
| adapter files -> serving it (ms) | {ours:.1f} | {peft:.1f} | {ours / peft:.2f}x |
| greedy generation, {r['tokens']} tokens, 1 prompt (ms) | {ours_gen:.1f} | {peft_gen:.1f} | {ours_gen / peft_gen:.2f}x |
| GPU memory over the bare base, serving (MiB) | {r['ours_mb']:.0f} | {r['peft_mb']:.0f} | |
| GPU memory over the bare base, peak while switching and generating (MiB) | {r['ours_peak_mb']:.0f} | {r['peft_peak_mb']:.0f} | |

Per switch, ours: {', '.join(f'{v:.1f}' for v in r['ours_ms'])} ms; peft: {', '.join(f'{v:.1f}' for v in r['peft_ms'])} ms.
Ours is read + `B @ A` merge of {r['modules']} modules + repointing + one forward pass with a finiteness check; peft's is `load_adapter` + `set_adapter` + the same forward pass. Merged weights make generation cost the base's, where peft adds the two LoRA matmuls to every targeted layer of every token; ours holds one merged copy of the targeted modules, and while it switches, the new copy beside the old one (kept until the check passes, for a clean fallback), with each module's float32 update formed one at a time.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tinyllama")
    parser.add_argument("--out", type=Path, help="also write the section body here")
    parser.add_argument("--record", type=Path,
                        help="write a body made by --out into BENCHMARKS.md and stop")
    args = parser.parse_args()
    from bench.report import write_section

    if args.record:
        body = args.record.read_text()
        device = body.split(" on one ", 1)[1].split(" (torch", 1)[0]
        write_section(SECTION, body, measured_on=f"one {device} (a lent GPU machine)")
        return
    body = report(measure(args.preset, args.switches, args.tokens))
    print(body)
    if args.out:
        args.out.write_text(body)
    if args.preset == "tinyllama":
        write_section(SECTION, body)


if __name__ == "__main__":
    main()
