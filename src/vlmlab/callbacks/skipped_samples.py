"""``train/skipped_samples``, ``val/skipped_samples``, ``test/skipped_samples``: samples that failed to
decode and were replaced under ``data.on_bad_sample=skip``, per epoch.

The counting is the datamodule's (``vlmlab.data.base.VisionLanguageDataModule``): decoding runs in
DataLoader workers, so each replacement carries a note in its metadata and the datamodule counts the
notes of every batch in the main process (``on_before_batch_transfer``, which also lists each skip in
the log and stops the run past ``data.max_bad_fraction``). This callback only reads that count at the
end of each epoch, sums it over processes (under DDP each rank counts its own batches), applies
``max_bad_fraction`` to the sum and logs it through Lightning. A datamodule without these counts
(no ``skipped_in_epoch``) is left alone.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class SkippedSamples(pl.Callback):
    """Log ``<split>/skipped_samples`` at the end of every training epoch and validation / test run."""

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        count = getattr(datamodule, "skipped_in_epoch", None)
        if count is None:
            return
        # Every rank reaches its epoch end, so the sum is a collective all of them join.
        local = torch.tensor(float(count(split)), device=pl_module.device)
        total = int(trainer.strategy.reduce(local, reduce_op="sum").item())
        datamodule.check_skipped(split, total)  # the exact check over every process's skips
        # Already summed: no sync_dist; batch_size given so Lightning does not look into the batch.
        pl_module.log(f"{split}/skipped_samples", float(total), on_step=False, on_epoch=True, batch_size=1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
