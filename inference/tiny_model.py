"""A tiny random GPT-2 and LoRA adapter for tests, benchmarks and demos (built in ~1 s).

Not a useful chat model: it exists so the serving path (load, merge, generate, swap) runs
for real without waiting for `flywheel trainer bootstrap`.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
_SENTENCES = [
    "user: hello there, how are you today?",
    "assistant: I am fine, thank you. How can I help you?",
    "user: my laptop does not start after the update.",
    "assistant: try holding the power button for ten seconds, then plug it in.",
    "user: what is the weather like in Paris in spring?",
    "assistant: mild and often rainy; bring a light coat and an umbrella.",
    "user: tell me a joke about computers.",
    "assistant: why did the computer go to the doctor? it had a virus.",
]


def build_tiny_base(
    path: Path, *, layers: int = 2, width: int = 64, context_tokens: int = 128,
    vocab_size: int = 400, seed: int = 0,
) -> Path:
    """Write a random GPT-2 with its own byte-level BPE tokenizer to `path`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_SENTENCES * 4, vocab_size=vocab_size, special_tokens=[EOS_TOKEN])
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=context_tokens,
    )
    eos_id = int(tokenizer.convert_tokens_to_ids(EOS_TOKEN))  # type: ignore[arg-type]
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=context_tokens, n_embd=width, n_layer=layers,
        n_head=2, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )
    model = GPT2LMHeadModel(config)  # type: ignore[no-untyped-call]
    # Keep eos unlikely so a random model produces full-length answers (stable timings).
    with torch.no_grad():
        model.lm_head.weight[eos_id].zero_()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_adapter(base: Path, path: Path, *, rank: int = 4, seed: int = 1) -> Path:
    """Write a LoRA adapter for `base` with random (non-zero) B so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(
        model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["c_attn"],
                          fan_in_fan_out=True, task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    peft_model.save_pretrained(str(path))
    return path
