"""AdamW with linear warm-up and cosine decay, from ``conf/optim``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class OptimSettings:
    """lr, weight decay (matrices only: biases and norms are not decayed), betas, and the schedule:
    ``warmup_ratio`` of the total optimizer steps of linear warm-up, then cosine decay to
    ``min_lr_ratio * lr``."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimizer ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def configure_adamw(model: torch.nn.Module, settings: OptimSettings, total_steps: int) -> dict[str, Any]:
    """The ``configure_optimizers`` return value for ``model``'s trainable parameters."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: check model.lora and model.freeze_vision")
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=settings.lr, betas=tuple(settings.betas)
    )
    warmup = round(settings.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total_steps, settings.min_lr_ratio)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
