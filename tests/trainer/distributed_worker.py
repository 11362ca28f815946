"""One rank of the distributed smoke test: `torchrun -m tests.trainer.distributed_worker`.

Arguments: the base model folder, an output folder, the strategy (`ddp` or `fsdp`).
Each rank logs to `<out>/rank<N>.log` and writes what it trained to `<out>/rank<N>.json`.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path


def main(base: Path, out: Path, strategy: str) -> None:
    import torch

    from tests.trainer.conftest import fast_trainer
    from tests.trainer.synthetic import billing_pairs
    from trainer.distributed import process_group
    from trainer.lora import train_adapter
    from trainer.model import choose_device, load_tokenizer
    from trainer.packing import TextExample, pack_examples

    torch.set_num_threads(1)
    trainer = fast_trainer(device="cpu", batch_size=4, max_steps=6, eval_every_steps=3,
                           checkpoint_every_steps=2, distributed_strategy=strategy)
    with process_group(trainer) as distributed:
        logging.basicConfig(filename=out / f"rank{distributed.rank}.log", level=logging.INFO,
                            format="%(name)s: %(message)s")
        tokenizer = load_tokenizer(base)
        pairs = billing_pairs(60, seed=3)
        train = pack_examples(tokenizer, [TextExample(p, a) for p, a in pairs[:48]],
                              sequence_length_tokens=64)
        val = pack_examples(tokenizer, [TextExample(p, a) for p, a in pairs[48:]],
                            sequence_length_tokens=64)
        result = train_adapter(base, train, val, trainer=trainer,
                               placement=distributed.place(choose_device("cpu")),
                               run_dir=out / "run", distributed=distributed)
        report = {**asdict(result), "adapter_dir": str(result.adapter_dir),
                  "rank": distributed.rank}
        (out / f"rank{distributed.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
