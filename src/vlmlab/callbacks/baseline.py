"""The score to beat: the best input-independent answer's metrics, logged beside the model's.

A model that learned the answer template but not the pixels gives one answer for every case (the same
report, the same box). :class:`ConstantBaseline` measures what that is worth on the validation split:
during the first validation epoch of a run it collects the targets, asks the module's metric for its
constant answer (``metric.constant_answer(targets)``: the medoid report, the mean box or span, the most
frequent letter or class; see each task module), scores it for every target with a fresh copy of the
metric (``metric.update_constant(answer, targets)``) and logs each key as
``val/<group>/<key>_constant``, e.g. ``val/brats/iou_3d_constant`` beside ``val/brats/iou_3d``.

Under several processes the targets of all ranks choose the answer, and each rank scores its own
targets, so the metric's sync gives the score over the whole split as for the model's answers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)

__all__ = ["ConstantBaseline", "validation_metrics"]


def validation_metrics(pl_module: pl.LightningModule) -> Any | None:
    """The metric the module validates with: ``val_metrics`` (the reward classifier keeps one per
    stage) or ``metrics`` (SFT and GRPO); None when it has neither."""
    for name in ("val_metrics", "metrics"):
        metric = getattr(pl_module, name, None)
        if metric is not None:
            return metric
    return None


def gather_targets(trainer: pl.Trainer, targets: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every rank's targets, in rank order (this rank's alone in a single process)."""
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return targets
    parts: list[list[Mapping[str, Any]] | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(parts, targets)
    return [target for part in parts for target in part or []]


class ConstantBaseline(pl.Callback):
    """Log ``val/<group>/<key>_constant`` once a run: the module's validation metric scored on the best
    answer that ignores the input (module docstring). Sanity-check validation is skipped; a metric
    without ``constant_answer`` / ``update_constant`` is skipped with a warning."""

    def __init__(self) -> None:
        self.targets: list[Mapping[str, Any]] = []
        self.done = False

    # Checkpointed, so that a resumed run does not log the baseline a second time at a later step.
    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict.get("done", False))

    def _collecting(self, trainer: pl.Trainer) -> bool:
        return not self.done and not trainer.sanity_checking

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # Duck-typed: the batch is a vlmlab.data.collate.VisionLanguageBatch, which callbacks may not import.
        if self._collecting(trainer):
            self.targets += list(getattr(batch, "targets", None) or [])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._collecting(trainer):
            return
        self.done = True
        local, self.targets = self.targets, []
        metric = validation_metrics(pl_module)
        if metric is None:
            return
        if not (hasattr(metric, "constant_answer") and hasattr(metric, "update_constant")):
            log.warning("%s has no constant_answer: no constant baseline logged", type(metric).__name__)
            return
        pool = gather_targets(trainer, local)
        if not pool:
            return
        answer = metric.constant_answer(pool)
        fresh = copy.deepcopy(metric)
        fresh.reset()
        fresh.update_constant(answer, local)
        scores = fresh.compute()
        log.info("constant baseline %r: %s", answer, scores)
        pl_module.log_dict(
            {f"val/{metric.group}/{key}_constant": float(value) for key, value in scores.items()},
            sync_dist=True,
        )
