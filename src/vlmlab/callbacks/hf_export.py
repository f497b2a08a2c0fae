"""Export the trained model in Hugging Face format next to the Lightning checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class HuggingFaceExport(pl.Callback):
    """At the end of ``fit``, call the module's ``export_hf`` into ``{checkpoint dir}/{dirname}``
    (or ``dirpath`` when given), on rank 0 only."""

    def __init__(self, dirname: str = "hf", dirpath: str | None = None):
        self.dirname = dirname
        self.dirpath = dirpath

    def target_dir(self, trainer: pl.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        checkpoint = trainer.checkpoint_callback
        base = (
            Path(checkpoint.dirpath)
            if checkpoint is not None and checkpoint.dirpath
            else Path(trainer.default_root_dir)
        )
        return base / self.dirname

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            out = pl_module.export_hf(self.target_dir(trainer))
            log.info("Hugging Face export: %s", out)
