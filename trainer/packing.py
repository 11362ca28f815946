"""Sequence packing: examples concatenated into full rows, so no compute goes to padding.

Each example is `prompt_text + response_text`; only response tokens carry loss (and the
example's weight). Examples are laid end to end and the stream is cut into rows of
`sequence_length_tokens`; an example may continue on the next row. Only the last row is
padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.textformat import prompt_text, response_text

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TextExample:
    """What packing needs of an example: its text and how much it counts."""

    prompt: str
    target: str
    weight: float = 1.0


@dataclass(frozen=True)
class Packed:
    """Rows ready for a causal LM: `labels` is -100 where no loss applies."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    loss_tokens: int
    """Tokens that carry loss (response tokens)."""
    tokens: int
    """Real (non-padding) tokens in all rows."""

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def encode(
    tokenizer: Any, examples: Sequence[TextExample], *, loss_on_prompt: bool = False
) -> list[tuple[list[int], list[int], list[float]]]:
    """Token ids, labels and per-token weights of each example (batch-tokenized)."""
    if not examples:
        return []
    prompts = tokenizer([prompt_text(e.prompt) for e in examples], add_special_tokens=False)
    answers = tokenizer([response_text(e.target) for e in examples], add_special_tokens=False)
    out = []
    for example, p_ids, a_ids in zip(
        examples, prompts["input_ids"], answers["input_ids"], strict=True
    ):
        ids = list(p_ids) + list(a_ids)
        labels = ids.copy() if loss_on_prompt else [IGNORE_INDEX] * len(p_ids) + list(a_ids)
        weights = [example.weight] * len(ids)
        out.append((ids, labels, weights))
    return out


def pack(
    encoded: Sequence[tuple[list[int], list[int], list[float]]],
    *,
    sequence_length_tokens: int,
    pad_token_id: int,
) -> Packed:
    """Lay the examples end to end and cut rows of `sequence_length_tokens`."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    for e_ids, e_labels, e_weights in encoded:
        ids += e_ids
        labels += e_labels
        weights += e_weights
    real = len(ids)
    n = max(1, -(-real // sequence_length_tokens))
    pad = n * sequence_length_tokens - real
    ids += [pad_token_id] * pad
    labels += [IGNORE_INDEX] * pad
    weights += [0.0] * pad
    shape = (n, sequence_length_tokens)
    label_tensor = torch.tensor(labels, dtype=torch.long).view(shape)
    return Packed(
        input_ids=torch.tensor(ids, dtype=torch.long).view(shape),
        labels=label_tensor,
        weights=torch.tensor(weights, dtype=torch.float32).view(shape),
        loss_tokens=int((label_tensor != IGNORE_INDEX).sum()),
        tokens=real,
    )


def pack_examples(
    tokenizer: Any,
    examples: Sequence[TextExample],
    *,
    sequence_length_tokens: int,
    loss_on_prompt: bool = False,
) -> Packed:
    """`encode` then `pack`, with the tokenizer's pad (or end-of-text) token as padding."""
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id or 0
    return pack(
        encode(tokenizer, examples, loss_on_prompt=loss_on_prompt),
        sequence_length_tokens=sequence_length_tokens,
        pad_token_id=pad_id,
    )


def causal_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (weighted) next-token loss and the number of tokens it covers."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    mask = (shift_labels.reshape(-1) != IGNORE_INDEX).float()
    if weights is not None:
        mask = mask * weights[:, 1:].reshape(-1).float()
    return (losses * mask).sum(), mask.sum()
