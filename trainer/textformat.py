"""How a (prompt, response) pair becomes text: the one chat format of the embedded model.

The bootstrap pre-trains on this format and fine-tuning and evaluation use it, so the
base model has seen the markers before any adapter is trained. Real chat bases with a
chat template could plug in here; the markers are ordinary special tokens.
"""

from __future__ import annotations

USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|endoftext|>"
SPECIAL_TOKENS = [END, USER, ASSISTANT, "<|pad|>"]


def prompt_text(prompt: str) -> str:
    """The part the model conditions on (no loss on it during fine-tuning)."""
    return f"{USER} {prompt.strip()}\n{ASSISTANT} "


def response_text(response: str) -> str:
    """The part the model learns to produce, ending with the end-of-text marker."""
    return f"{response.strip()}{END}"
