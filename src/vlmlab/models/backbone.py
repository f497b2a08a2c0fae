"""One loader for Qwen2.5-VL and Qwen3-VL: a local folder, a hub id in the local cache, or a tiny
random-initialised model built offline (``tiny: true``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from vlmlab.models.facts import QWEN_CHAT, ChatFormat, ModelFacts, VisionGeometry
from vlmlab.models.lora import LoRASettings, apply_lora
from vlmlab.models.processor import Family, offline_processor
from vlmlab.models.temporal_tokens import (
    TEMPORAL_TOKENS,
    InitStrategy,
    add_temporal_tokens,
    init_temporal_embeddings,
)
from vlmlab.models.tiny import tiny_config

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BackboneSpec:
    """What to load and how to train it; built from ``conf/model/*.yaml``.

    family: ``qwen2_5_vl`` or ``qwen3_vl``.
    name_or_path: local folder or hub id (looked up in the local cache only). Ignored when ``tiny``.
    tiny: build a tiny random-initialised model of ``family`` (real vocabulary, toy widths), seeded
        by ``init_seed`` so the same spec always gives the same weights.
    lora: LoRA settings, or None for full fine-tuning.
    freeze_vision: freeze the vision tower and its merger (full fine-tuning; LoRA freezes them anyway).
    min_pixels / max_pixels: bounds of Qwen's smart resize for every image and video frame.
    init_from: a Lightning checkpoint of an earlier vlmlab run (e.g. SFT before GRPO) whose weights
        (adapters, or the trained weights in full fine-tuning) initialise this model; the run's
        model config must match (same family, LoRA settings and freezing).
    temporal_tokens: add ``<0>``..``<999>`` to the tokenizer (the grounding recipe's ``use_temporal_tokens``), grow
        the embeddings and initialise their rows by ``temporal_token_init``; with LoRA the input and
        output embeddings are trained too (peft ``modules_to_save``), or the new rows never learn.
    """

    family: Family
    name_or_path: str | None = None
    tiny: bool = False
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    freeze_vision: bool = True
    lora: LoRASettings | None = None
    min_pixels: int = 28 * 28
    max_pixels: int = 256 * 28 * 28
    init_seed: int = 0
    temporal_tokens: bool = False
    temporal_token_init: InitStrategy = "sinusoidal"
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype={self.dtype!r}; expected one of {sorted(DTYPES)}")
        if not self.tiny and not self.name_or_path:
            raise ValueError("model.name_or_path is required unless model.tiny=true")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def load_processor(self) -> ProcessorMixin:
        if self.tiny:
            processor = offline_processor(self.family, self.min_pixels, self.max_pixels)
        else:
            try:
                processor = AutoProcessor.from_pretrained(
                    self.name_or_path,
                    local_files_only=True,
                    min_pixels=self.min_pixels,
                    max_pixels=self.max_pixels,
                )
            except OSError as error:
                raise FileNotFoundError(_not_found(self.name_or_path)) from error
        if self.temporal_tokens:
            add_temporal_tokens(processor.tokenizer)
        return processor

    @property
    def chat(self) -> ChatFormat:
        """The chat markers of the family's template (both families use Qwen's)."""
        return QWEN_CHAT

    def facts(self, processor: ProcessorMixin) -> ModelFacts:
        """What data and collation must know about this model, read from its processor."""
        return ModelFacts(vision=VisionGeometry.from_processor(self.family, processor), chat=self.chat)

    def load_base_model(self, processor: ProcessorMixin | None = None) -> PreTrainedModel:
        """The backbone without adapters, frozen as configured. With temporal tokens the embeddings grow
        to the tokenizer of ``processor`` (loaded when not given)."""
        if self.tiny:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.init_seed)
                model = AutoModelForImageTextToText.from_config(
                    tiny_config(self.family),
                    dtype=self.torch_dtype,
                    attn_implementation=self.attn_implementation,
                )
        else:
            try:
                model = AutoModelForImageTextToText.from_pretrained(
                    self.name_or_path,
                    dtype=self.torch_dtype,
                    attn_implementation=self.attn_implementation,
                    local_files_only=True,
                )
            except OSError as error:
                raise FileNotFoundError(_not_found(self.name_or_path)) from error
        if self.temporal_tokens:
            tokenizer = (processor or self.load_processor()).tokenizer
            ids = tokenizer.convert_tokens_to_ids(TEMPORAL_TOKENS)
            init_temporal_embeddings(model, ids, self.temporal_token_init, vocab_size=len(tokenizer))
        if self.freeze_vision:
            for parameter in vision_tower(model).parameters():
                parameter.requires_grad_(False)
        return model

    def load_model(self, processor: ProcessorMixin | None = None) -> PreTrainedModel | PeftModel:
        """The trainable model: base (+ LoRA), with gradient checkpointing if configured."""
        model = self.load_base_model(processor)
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        if self.lora is not None:
            extra = ["embed_tokens", "lm_head"] if self.temporal_tokens else []
            model = apply_lora(model, self.lora, modules_to_save=extra)
        if self.init_from:
            load_trained_weights(model, self.init_from)
        return model


def vision_tower(model: PreTrainedModel | PeftModel) -> torch.nn.Module:
    """The vision encoder and merger of a Qwen-VL model (``model.model.visual``)."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    return model.model.visual


def _not_found(name_or_path: str | None) -> str:
    where = "a local folder" if Path(str(name_or_path)).exists() else "not a local folder nor in the HF cache"
    return (
        f"Could not load model.name_or_path={name_or_path!r} ({where}); vlmlab never downloads. "
        "Point it at a folder with config.json and weights, or use preset=tiny."
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def load_trained_weights(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """Copy the weights a vlmlab Lightning checkpoint holds (its module's ``model.*`` entries: the
    trainable weights of that run) into ``model``. Every checkpoint entry must find its parameter."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from={str(checkpoint)!r} is not a checkpoint file")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    own = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(own))
    if not weights or unknown:
        raise KeyError(
            f"{path}: {len(unknown)} of {len(weights)} weights have no parameter in this model (e.g. {unknown[:2]}): "
            "model.init_from needs the same model config (family, LoRA, freezing) as the run that wrote it"
        )
    with torch.no_grad():
        for name, value in weights.items():
            own[name].copy_(value)
    log.info("initialised %d weight tensors from %s", len(weights), path)


def last_hidden_state(model: PreTrainedModel | PeftModel, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[B, L, H]`` final hidden states of a Qwen-VL backbone (vision + language model, no ``lm_head``).

    LoRA adapters are injected into the inner modules, so calling the inner ``model.model`` of the
    peft-wrapped model still runs them.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    inner = getattr(base, "model", None)
    if inner is None:
        raise TypeError(
            f"{type(base).__name__} has no inner .model: not a Qwen-VL ...ForConditionalGeneration"
        )
    return inner(**inputs, use_cache=False, return_dict=True).last_hidden_state


def lm_head(model: PreTrainedModel | PeftModel) -> torch.nn.Module:
    """The output projection of a Qwen-VL backbone (peft's wrapper when it is trained as a whole)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.lm_head
