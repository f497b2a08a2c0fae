"""What every vlmlab LightningModule shares: checkpoints of trainable weights only, the Hugging Face
export of the backbone, and the predictions file of a test run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from peft import PeftModel
from pytorch_lightning.strategies import DeepSpeedStrategy
from transformers import ProcessorMixin

from vlmlab.models.backbone import BackboneSpec

log = logging.getLogger(__name__)


class TrainableWeightsCheckpoint(pl.LightningModule):
    """Checkpoints hold only the trainable weights (adapters, heads, or the unfrozen weights); the
    frozen base is rebuilt from the model config on load, so a 7B LoRA checkpoint is megabytes.

    Loading checks that every trainable weight of this module is in the checkpoint, so a checkpoint of
    another model or LoRA config is refused instead of silently half-loaded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.strict_loading = False  # the frozen base is not in the checkpoint; checked below instead

    def trainable_names(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "state_dict" not in checkpoint:
            return  # DeepSpeed: its engine restores the weights from the checkpoint directory itself
        missing = sorted(self.trainable_names() - set(checkpoint["state_dict"]))
        if missing:
            raise KeyError(
                f"checkpoint lacks {len(missing)} trainable weight(s) of this model, e.g. {missing[:3]}: "
                "was it trained with another model or LoRA config?"
            )


def skip_nonfinite_loss(module: pl.LightningModule, loss: torch.Tensor, batch_ids: list[str]) -> bool:
    """Whether this training step must be skipped because its loss is non-finite on any rank.

    A non-finite loss is never applied. The decision is taken by all ranks together: under DDP a rank
    that skipped alone would leave the others waiting in the gradient all-reduce. Lightning skips
    backward and the optimizer step when ``training_step`` returns None, which DeepSpeed does not
    support, so there the run stops with the step and batch named (resume with ``ckpt_path=last``).
    """
    finite = bool(torch.isfinite(loss.detach()).all())
    try:
        strategy = module.trainer.strategy
    except RuntimeError:  # not attached to a trainer (a manual call)
        strategy = None
    if strategy is not None:
        finite = strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return False
    if isinstance(strategy, DeepSpeedStrategy):
        raise FloatingPointError(
            f"non-finite loss at step {module.global_step} (batch {batch_ids}, or another rank's): "
            "DeepSpeed cannot skip a step; lower the learning rate or check the data, then resume"
        )
    log.warning(
        "non-finite loss at step %d (batch %s, or another rank's): step skipped",
        module.global_step,
        batch_ids,
    )
    module.log("train/skipped_nonfinite", 1.0, on_step=True, reduce_fx="sum", batch_size=1)
    return True


def export_backbone(
    model: torch.nn.Module, processor: ProcessorMixin, backbone: BackboneSpec, out_dir: str | Path
) -> Path:
    """Save in Hugging Face format, loadable with transformers and peft alone.

    LoRA: ``adapter_config.json`` + ``adapter_model.safetensors`` and the processor in ``out_dir``; for
    a tiny random backbone (no folder to load it from) also its weights in ``out_dir/base``.
    Full fine-tuning: the whole model and processor in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if isinstance(model, PeftModel) and backbone.tiny:
        backbone.load_base_model(processor).save_pretrained(out / "base")
    return out


def write_predictions(path: str | Path, records: list[dict[str, Any]], trainer: pl.Trainer) -> Path:
    """One JSON line per record; under several processes each rank writes ``<name>.rank<r>.jsonl``."""
    path = Path(path)
    if trainer.world_size > 1:
        path = path.with_suffix(f".rank{trainer.global_rank}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    log.info("wrote %d predictions to %s", len(records), path)
    return path
