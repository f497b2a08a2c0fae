"""LoRA through peft, restricted to the language model (the vision tower is never adapted)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

# Qwen-VL module names: the language model lives under ``...language_model...``; the vision tower
# (``visual``) also has gate/up/down projections, which a bare module list would wrongly adapt.
LANGUAGE_MODEL_PATTERN = r".*language_model.*\.({names})"


@dataclass
class LoRASettings:
    """peft LoRA hyper-parameters (defaults: the robot reward recipe, r 16 / alpha 32 / dropout 0.05)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = "none"

    def target_regex(self) -> str:
        return LANGUAGE_MODEL_PATTERN.format(names="|".join(re.escape(n) for n in self.target_modules))

    def to_peft_config(self, modules_to_save: list[str] | None = None) -> LoraConfig:
        return LoraConfig(
            modules_to_save=modules_to_save or None,
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_regex(),
            bias=self.bias,
            task_type="CAUSAL_LM",
        )


def apply_lora(
    model: PreTrainedModel, settings: LoRASettings, modules_to_save: list[str] | None = None
) -> PeftModel:
    """Wrap ``model`` with LoRA adapters; every other parameter is frozen by peft, except the modules
    named in ``modules_to_save``, which are trained in full (e.g. embeddings of added tokens)."""
    peft_model = get_peft_model(model, settings.to_peft_config(modules_to_save))
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise ValueError(f"LoRA matched no module for target_modules={settings.target_modules}")
    return peft_model
