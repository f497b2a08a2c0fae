"""Batch-size statistics for dynamic batching (the grounding recipe: "Step 10: batch_size avg=24.3, min=20, max=28")."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.data import extract_batch_size

log = logging.getLogger(__name__)


def batch_size_of(batch: Any) -> int:
    """Samples in a training batch: ``len(batch)`` for batch objects (``VisionLanguageBatch``),
    the leading dimension for a tensor or a (list / tuple / dict of) tensors."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if hasattr(batch, "__len__") and not isinstance(batch, list | tuple | dict | str):
        return len(batch)
    # A default-collated [x, y] has len 2 whatever the batch size: look inside instead.
    return extract_batch_size(batch)


class BatchSizeStats(pl.Callback):
    """Record each training batch's size; every ``logging_interval`` batches log the window's
    ``train/batch_size/{avg,min,max}`` through ``pl_module.log``, the window's sizes as the TensorBoard
    histogram ``train/batch_size`` (every TensorBoardLogger), and one line to python logging.

    The sizes are this rank's (with a duration-bucketing sampler they differ between ranks); the
    histogram and the python log line are written on global rank 0 only. ``history`` keeps one dict per logged window.
    """

    def __init__(self, logging_interval: int = 10):
        if logging_interval < 1:
            raise ValueError(f"logging_interval must be >= 1, got {logging_interval}")
        self.logging_interval = logging_interval
        self.window: list[int] = []
        self.history: list[dict[str, float]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.window.append(batch_size_of(batch))
        if len(self.window) < self.logging_interval:
            return
        sizes, self.window = self.window, []
        stats = {"avg": sum(sizes) / len(sizes), "min": float(min(sizes)), "max": float(max(sizes))}
        for name, value in stats.items():
            # batch_size given so Lightning does not try to infer it from the batch object.
            pl_module.log(f"train/batch_size/{name}", value, on_step=True, on_epoch=False, batch_size=1)
        self.history.append({"step": float(trainer.global_step), **stats})
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # Integer-wide bins: the default "tensorflow" bins would smear sizes like 3 and 4 together.
                bins = np.arange(min(sizes) - 0.5, max(sizes) + 1.5)
                logger.experiment.add_histogram(
                    "train/batch_size", np.asarray(sizes), trainer.global_step, bins=bins
                )
        log.info(
            "Step %d: batch_size avg=%.1f, min=%d, max=%d",
            trainer.global_step,
            stats["avg"],
            stats["min"],
            stats["max"],
        )
