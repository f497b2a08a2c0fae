"""The run's checkpoints: Lightning's ``ModelCheckpoint`` with one ``last.ckpt``, always the newest.

Two behaviours of Lightning's ``ModelCheckpoint`` (pytorch-lightning 2.6.6) break that, and both are
corrected here, in :class:`ModelCheckpoint` (``callbacks.model_checkpoint`` in
``conf/callbacks/default.yaml``), tested by ``tests/test_checkpoint_requeue.py``:

* **The version counter.** Before writing ``last.ckpt`` (or ``step_*.ckpt``) over an existing file that
  its state does not list as its own, Lightning writes ``last-v1.ckpt`` (``step_*-v1.ckpt``) beside it.
  A requeued SLURM job resumes from ``hpc_ckpt_N.ckpt``, saved wherever USR1 landed; when that was
  before the run's first checkpoint step, the job still wrote ``last.ckpt`` and ``step_*.ckpt`` before
  SLURM stopped it, and the resumed callback (its state from the hpc checkpoint) knew neither. From then
  on the newest checkpoint went to ``last-v1.ckpt``, ``last.ckpt`` stayed at the old step
  (``ckpt_path=last`` and ``model.init_from=.../last.ckpt`` would have taken it) and the old step file
  outlived ``save_top_k: 1``. A run folder's checkpoints are that run's, so here they are overwritten:
  ``enable_version_counter`` defaults to False.
* **last.ckpt only beside a top-k save.** Since Lightning 2.6 a validation writes ``last.ckpt`` only when
  it also saved a top-k checkpoint, so with ``save_top_k: 1`` and a monitor, ``last.ckpt`` stops at the
  best step whenever the metric gets worse. Here every save point that may write a top-k checkpoint
  writes ``last.ckpt`` too (``save_last: true``), as before 2.6. And the end of training writes
  ``last.ckpt`` when the final step has none yet (``max_steps`` off a validation step; a run resumed
  from an hpc checkpoint, which Lightning saves from inside the signal handler, mid-step, can validate
  one step early and then stop at ``max_steps`` without a save), so ``last.ckpt`` is the final weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import Tensor

__all__ = ["ModelCheckpoint"]


class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """``pytorch_lightning.callbacks.ModelCheckpoint`` whose ``last.ckpt`` is always the newest checkpoint
    (see the module's docstring); the arguments are Lightning's."""

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, Tensor]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            # Lightning's save points write last.ckpt after this only if a file was saved at this step
            # (`_last_global_step_saved == global_step`); count the step as saved, top-k file or not.
            self._last_global_step_saved = trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # Lightning writes last.ckpt here only when the run saved nothing at all.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
