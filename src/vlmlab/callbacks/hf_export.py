"""Export the trained model in Hugging Face format next to the Lightning checkpoints."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


def shards_parameters(strategy: object) -> bool:
    """Whether ``strategy`` partitions the weights themselves across ranks (DeepSpeed ZeRO-3).

    Duck-typed on Lightning's ``DeepSpeedStrategy.zero_stage_3``, so it needs neither DeepSpeed nor a GPU.
    """
    return bool(getattr(strategy, "zero_stage_3", False))


@contextlib.contextmanager
def gathered_parameters(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Inside the block every ZeRO-3 partitioned parameter of ``module`` holds its full tensor.

    Under ZeRO-3 each rank keeps only a shard of every weight (the parameter itself is an empty
    placeholder), so a ``state_dict`` taken outside this block would be empty. The gather is a
    collective: **every rank** must enter the block. Read-only (``modifier_rank=None``): changes made
    inside are discarded. It materialises the whole model on each rank's device at once (about 2 bytes
    per parameter in bf16). ``enabled=False`` (DDP, ZeRO-2, one device): a no-op.
    """
    if not enabled:
        yield
        return
    import deepspeed  # only here: importing it probes the accelerators

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


class HuggingFaceExport(pl.Callback):
    """At the end of ``fit``, call the module's ``export_hf`` into ``{checkpoint dir}/{dirname}``
    (or ``dirpath`` when given). Rank 0 writes; under DeepSpeed ZeRO-3 every rank first joins the
    all-gather of the sharded weights (:func:`gathered_parameters`)."""

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
        with gathered_parameters(pl_module, enabled=shards_parameters(trainer.strategy)):
            if trainer.is_global_zero:
                out = pl_module.export_hf(self.target_dir(trainer))
                log.info("Hugging Face export: %s", out)
