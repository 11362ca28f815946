"""Loading any Hugging Face causal LM from a local folder, on the device settings choose."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainer.errors import BaseModelMissingError, TrainerConfigError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where and in what precision the model runs."""

    device: str
    dtype: torch.dtype
    autocast: bool


def choose_device(preference: Literal["auto", "cpu", "cuda"]) -> Placement:
    """CUDA with bf16 where present (or asked for), CPU in float32 otherwise.

    Raises:
        TrainerConfigError: `cuda` was asked for and no CUDA device is visible.
    """
    import torch

    has_cuda = torch.cuda.is_available()
    if preference == "cuda" and not has_cuda:
        raise TrainerConfigError(
            "trainer.device is 'cuda' but torch sees no CUDA device; "
            "set FLYWHEEL_TRAINER__DEVICE=auto or cpu"
        )
    if preference != "cpu" and has_cuda:
        bf16 = torch.cuda.is_bf16_supported()
        return Placement("cuda", torch.bfloat16 if bf16 else torch.float16, autocast=not bf16)
    return Placement("cpu", torch.float32, autocast=False)


def check_base_model(path: Path) -> None:
    """Fail early when `path` is not a saved Hugging Face model with a tokenizer.

    Raises:
        BaseModelMissingError: the folder or its config/tokenizer files are missing.
    """
    if not path.is_dir():
        raise BaseModelMissingError(
            f"no base model at {path}; build the embedded one with `flywheel trainer bootstrap` "
            "or point model.base_model_path (FLYWHEEL_MODEL__BASE_MODEL_PATH) at a Hugging Face "
            "causal LM folder"
        )
    if not (path / "config.json").is_file():
        raise BaseModelMissingError(
            f"{path} has no config.json, so it is not a saved Hugging Face model; "
            "rebuild it with `flywheel trainer bootstrap --force`"
        )
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise BaseModelMissingError(
            f"{path} has no tokenizer files; save the tokenizer next to the model "
            "(tokenizer.save_pretrained) or rebuild with `flywheel trainer bootstrap --force`"
        )


def load_tokenizer(path: Path) -> Any:
    """The model's tokenizer, set up for batched generation (left padding).

    Raises:
        BaseModelMissingError: as `check_base_model`.
    """
    from transformers import AutoTokenizer

    check_base_model(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_base(path: Path, placement: Placement) -> Any:
    """`AutoModelForCausalLM.from_pretrained(path)` on the chosen device and dtype.

    Raises:
        BaseModelMissingError: as `check_base_model`.
    """
    from transformers import AutoModelForCausalLM

    check_base_model(path)
    model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=placement.dtype)
    return model.to(placement.device)


def load_with_adapter(path: Path, placement: Placement, adapter_dir: Path | None) -> Any:
    """The base model with a LoRA adapter applied (or the bare base when `adapter_dir` is None).

    Raises:
        BaseModelMissingError: as `check_base_model`.
    """
    model = load_base(path, placement)
    if adapter_dir is None:
        return model.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).to(placement.device).eval()


def find_adapter(folder: Path) -> Path:
    """The folder holding `adapter_config.json` inside a published version folder.

    Raises:
        TrainerError: there is none.
    """
    from trainer.errors import TrainerError

    if (folder / "adapter_config.json").is_file():
        return folder
    for config in sorted(folder.rglob("adapter_config.json")):
        return config.parent
    raise TrainerError(f"no adapter_config.json under {folder}; is it a published adapter?")
