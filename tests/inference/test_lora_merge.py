"""In-place LoRA merging: the same weights as peft's merge, exact return to the base, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from inference.tiny_model import build_tiny_adapter
from inference.triton_model.lora_merge import AdapterError, MergedWeights, read_deltas


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_merged_weights_match_peft_merge_and_unload(tiny_base: Path, tiny_adapter: Path) -> None:
    from peft import PeftModel

    expected = _weights(PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_base), str(tiny_adapter)).merge_and_unload())
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    merged = MergedWeights(model)

    merged.install(merged.build(read_deltas(tiny_adapter, model)))

    actual = _weights(model)
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, msg=name)


def test_switching_back_to_the_base_restores_its_exact_tensors(
    tiny_base: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    other = build_tiny_adapter(tiny_base, tmp_path / "other", seed=7)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    base = _weights(model)
    merged = MergedWeights(model)

    for adapter in (tiny_adapter, other, tiny_adapter):
        merged.install(merged.build(read_deltas(adapter, model)))
    merged.install(merged.build({}))

    for name, tensor in _weights(model).items():
        assert torch.equal(tensor, base[name]), name


def test_undoing_an_install_puts_the_previous_adapter_back(
    tiny_base: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    other = build_tiny_adapter(tiny_base, tmp_path / "other", seed=7)
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    merged = MergedWeights(model)
    merged.install(merged.build(read_deltas(tiny_adapter, model)))
    first = _weights(model)

    previous = merged.install(merged.build(read_deltas(other, model)))
    merged.install(previous)

    for name, tensor in _weights(model).items():
        assert torch.equal(tensor, first[name]), name


@pytest.mark.parametrize(("change", "message"), [
    ({"use_dora": True}, "use_dora"),
    ({"peft_type": "IA3"}, "only LORA"),
    ({"r": 0}, "r must be a positive rank"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
])
def test_read_deltas_raises_error_naming_an_unsupported_setting(
    tiny_base: Path, tiny_adapter: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    adapter = shutil.copytree(tiny_adapter, tmp_path / "adapter")
    config_path = adapter / "adapter_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **change}))
    model = AutoModelForCausalLM.from_pretrained(tiny_base)

    with pytest.raises(AdapterError, match=message):
        read_deltas(adapter, model)


def test_read_deltas_raises_error_when_the_weights_file_is_corrupt(
    tiny_base: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    adapter = shutil.copytree(tiny_adapter, tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00not safetensors" * 8)

    with pytest.raises(AdapterError, match="not a readable safetensors file"):
        read_deltas(adapter, AutoModelForCausalLM.from_pretrained(tiny_base))


def test_read_deltas_raises_error_when_the_adapter_targets_another_base(
    tiny_adapter: Path, tmp_path: Path
) -> None:
    from inference.tiny_model import build_tiny_base

    wider = build_tiny_base(tmp_path / "wider", width=96)

    with pytest.raises(AdapterError, match="trained on another base"):
        read_deltas(tiny_adapter, AutoModelForCausalLM.from_pretrained(wider))
