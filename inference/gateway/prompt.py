"""OpenAI messages -> the prompt text the model was trained on (trainer.textformat)."""

from __future__ import annotations

from inference.gateway.api import Message

try:  # the trainer's format is the contract; fall back to it verbatim if trainer is absent
    from trainer.textformat import ASSISTANT, END, USER
except ImportError:  # pragma: no cover
    USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|endoftext|>"


def render_prompt(messages: list[Message]) -> str:
    """Earlier turns as completed exchanges, the last user turn as an open prompt.

    System messages become a plain first line (the embedded model has no system role).
    """
    parts: list[str] = []
    for message in messages:
        text = message.content.strip()
        if message.role == "system":
            parts.append(f"{text}\n")
        elif message.role == "user":
            parts.append(f"{USER} {text}\n{ASSISTANT} ")
        else:
            parts.append(f"{text}{END}")
    return "".join(parts)
