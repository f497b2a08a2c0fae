"""The Lightning internals vlmlab reads, in one place, each with the reason (pytorch-lightning 2.6.6;
``tests/test_compat_lightning.py`` pins that version and checks every one on a real Trainer).

* :func:`uses_distributed_sampler`: whether the Trainer shards training data over ranks itself. The
  flag is the Trainer argument, kept only on its private accelerator connector; the datamodule needs it
  to build a resumable sampler that shards the same way.
* :func:`batches_done`: training batches of the current epoch whose step ran; the datamodule saves it
  as the resume position. Only the fit loop's progress tracker knows it (the sampler runs ahead of
  training by the loader's prefetch).
* :func:`zero_stage_3` / :func:`generation_sync_kwargs`: whether the strategy shards the weights
  themselves (DeepSpeed ZeRO-3), so that generation must keep every rank stepping.
"""

from __future__ import annotations

import pytorch_lightning as pl

__all__ = [
    "LIGHTNING_VERSION",
    "batches_done",
    "generation_sync_kwargs",
    "uses_distributed_sampler",
    "zero_stage_3",
]

LIGHTNING_VERSION = "2.6.6"  # the version these readings were written for (and tested against)


def uses_distributed_sampler(trainer: pl.Trainer) -> bool:
    """``Trainer(use_distributed_sampler=...)``: Lightning keeps it on its accelerator connector only."""
    return bool(trainer._accelerator_connector.use_distributed_sampler)


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches of the current epoch whose step ran (the fit loop's own count; what Lightning
    counts as done when it restores a checkpoint)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def zero_stage_3(strategy: object) -> bool:
    """Whether ``strategy`` partitions the weights themselves across ranks (DeepSpeed ZeRO-3).

    Read from the DeepSpeed config (``config["zero_optimization"]["stage"]``) or Lightning's
    ``DeepSpeedStrategy.zero_stage_3``, so it needs neither DeepSpeed nor a GPU.
    """
    config = getattr(strategy, "config", None)
    if isinstance(config, dict):
        zero = config.get("zero_optimization") or {}
        return isinstance(zero, dict) and zero.get("stage") == 3
    return bool(getattr(strategy, "zero_stage_3", False))


def generation_sync_kwargs(strategy: object) -> dict[str, bool]:
    """Extra ``generate`` kwargs the strategy needs: ``{"synced_gpus": True}`` under ZeRO-3, else ``{}``.

    Under ZeRO-3 each forward all-gathers the sharded weights; a rank whose completions all hit EOS
    early would stop calling forward and the others would hang in the all-gather. ``synced_gpus``
    keeps every rank stepping until all are done.
    """
    return {"synced_gpus": True} if zero_stage_3(strategy) else {}
