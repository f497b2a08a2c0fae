"""Backbone loading: tiny models of both families, LoRA placement, freezing, local-folder loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vlmlab.data.collate import SFTCollator
from vlmlab.data.sample import Sample
from vlmlab.models.backbone import BackboneSpec, count_parameters, vision_tower
from vlmlab.models.lora import LoRASettings
from vlmlab.models.tiny import SPECIAL_TOKEN_IDS

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


def tiny(family: str, lora: LoRASettings | None = None, **kwargs) -> BackboneSpec:
    return BackboneSpec(
        family=family, tiny=True, dtype="float32", lora=lora, min_pixels=784, max_pixels=3136, **kwargs
    )


def batch_for(processor) -> dict[str, torch.Tensor]:
    video = np.random.default_rng(0).integers(0, 255, (4, 56, 56, 3), dtype=np.uint8)
    sample = Sample(
        id="a",
        messages=[
            {
                "role": "user",
                "content": [{"type": "video", "video": video}, {"type": "text", "text": "Describe."}],
            }
        ],
        answer="Findings: none.",
    )
    return SFTCollator(processor).train([sample]).inputs


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_matches_the_tokenizer_and_runs(family: str, tiny_processors: dict) -> None:
    spec = tiny(family)
    model = spec.load_base_model()
    tokenizer = tiny_processors[family].tokenizer
    for name, token in [
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ]:
        assert (
            getattr(model.config, name) == SPECIAL_TOKEN_IDS[name] == tokenizer.convert_tokens_to_ids(token)
        )
    assert len(tokenizer) == 151_669
    _, total = count_parameters(model)
    assert 19e6 < total < 20.5e6
    logits = model(**batch_for(tiny_processors[family])).logits
    assert logits.shape[-1] == 151_936 and torch.isfinite(logits).all()


def test_tiny_initialisation_is_deterministic() -> None:
    a, b = tiny("qwen2_5_vl").load_base_model(), tiny("qwen2_5_vl").load_base_model()
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_the_language_model_only(family: str) -> None:
    settings = LoRASettings(
        r=4,
        alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    model = tiny(family, lora=settings).load_model()
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert len(adapted) == 2 * 7  # 2 layers x 7 projections
    assert all("language_model" in n for n in adapted)
    assert not any(p.requires_grad for p in vision_tower(model).parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_full_fine_tuning_freezes_only_the_vision_tower() -> None:
    model = tiny("qwen2_5_vl").load_model()
    assert not any(p.requires_grad for p in vision_tower(model).parameters())
    assert model.lm_head.weight.requires_grad
    unfrozen = tiny("qwen2_5_vl", freeze_vision=False).load_model()
    assert all(p.requires_grad for p in vision_tower(unfrozen).parameters())


def test_a_local_folder_loads_through_the_same_code(tmp_path: Path, tiny_processors: dict) -> None:
    spec = tiny("qwen3_vl")
    spec.load_base_model().save_pretrained(tmp_path)
    spec.load_processor().save_pretrained(tmp_path)
    local = BackboneSpec(family="qwen3_vl", name_or_path=str(tmp_path), dtype="float32", lora=None)
    inputs = batch_for(local.load_processor())
    with torch.no_grad():
        expected = spec.load_base_model()(**inputs).logits
        assert torch.equal(local.load_model()(**inputs).logits, expected)


def test_missing_weights_say_that_nothing_is_downloaded(tmp_path: Path) -> None:
    spec = BackboneSpec(family="qwen2_5_vl", name_or_path="Qwen/Qwen2.5-VL-7B-Instruct", lora=None)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        spec.load_processor()
    with pytest.raises(ValueError, match="name_or_path is required"):
        BackboneSpec(family="qwen2_5_vl")
    with pytest.raises(ValueError, match=r"model\.dtype"):
        BackboneSpec(family="qwen2_5_vl", tiny=True, dtype="fp8")
