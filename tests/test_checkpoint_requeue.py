"""One ``last.ckpt``, always the newest, across a SLURM requeue (issue 12), with the checkpoint callback
exactly as ``conf/callbacks/default.yaml`` configures it (``vlmlab.callbacks.checkpoint.ModelCheckpoint``).

A requeued job resumes from ``hpc_ckpt_N.ckpt``, which Lightning saves whenever USR1 lands. When it landed
before the run's first checkpoint step, the job went on to write ``last.ckpt`` and ``step_*.ckpt`` before
SLURM stopped it, and the resumed callback's state (from the hpc checkpoint) knew neither file. Lightning's
version counter then took both for another run's files: the resumed run wrote ``last-v1.ckpt`` and
``step_*-v1.ckpt`` beside them, ``last.ckpt`` stayed at the old step (``ckpt_path=last`` would have gone
back to it), and the old ``step_*.ckpt`` outlived ``save_top_k: 1``. And since Lightning 2.6 a validation
wrote ``last.ckpt`` only beside a new top-k file, so ``last.ckpt`` stopped at the best step."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import CONF

EVERY = 4  # validation and checkpoints every EVERY steps


class Linear(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self) -> DataLoader:
        x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return self.train_dataloader()


class SaveLikeUsr1(pl.Callback):
    """Saves ``hpc_ckpt_1.ckpt`` after step ``at``, as Lightning's USR1 handler does when the signal lands."""

    def __init__(self, folder: Path, at: int) -> None:
        self.path, self.at = folder / "hpc_ckpt_1.ckpt", at

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.at:
            trainer.save_checkpoint(self.path)


def project_checkpoint_callback(folder: Path, mode: str) -> pl.callbacks.ModelCheckpoint:
    cfg = OmegaConf.load(CONF / "callbacks" / "default.yaml").model_checkpoint
    cfg.dirpath, cfg.monitor, cfg.mode = str(folder / "checkpoints"), "val/loss", mode
    return instantiate(cfg)


def fit(
    folder: Path, max_steps: int, ckpt_path: Path | None = None, *extra: pl.Callback, mode: str = "min"
) -> None:
    pl.seed_everything(0)
    trainer = pl.Trainer(
        default_root_dir=folder,
        max_steps=max_steps,
        val_check_interval=EVERY,
        limit_val_batches=2,
        callbacks=[project_checkpoint_callback(folder, mode), *extra],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Linear(), ckpt_path=ckpt_path)


def test_a_requeue_before_the_first_checkpoint_keeps_one_last_ckpt_at_the_final_step(tmp_path: Path) -> None:
    # The first run: USR1 at step 3, then the job reaches its first checkpoint step (4) before it stops.
    fit(tmp_path, EVERY, None, SaveLikeUsr1(tmp_path, at=EVERY - 1))
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step_000004.ckpt"]
    # The requeued job resumes from the hpc checkpoint (as Lightning does by itself) and runs to the end.
    fit(tmp_path, 3 * EVERY, tmp_path / "hpc_ckpt_1.ckpt")
    names = sorted(p.name for p in checkpoints.iterdir())
    assert "last.ckpt" in names and not [n for n in names if "-v" in n], names
    assert len([n for n in names if n.startswith("step_")]) == 1, names  # save_top_k: 1
    assert step_of(checkpoints / "last.ckpt") == 3 * EVERY


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=False)["global_step"]


def test_last_ckpt_follows_every_validation_when_the_metric_gets_worse(tmp_path: Path) -> None:
    # mode=max on a falling val/loss: only the first validation is a top-k checkpoint.
    fit(tmp_path, 3 * EVERY, mode="max")
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step_000004.ckpt"]
    assert step_of(checkpoints / "last.ckpt") == 3 * EVERY


def test_last_ckpt_holds_the_final_step_off_a_validation_step(tmp_path: Path) -> None:
    fit(tmp_path, 2 * EVERY + 2)  # stops two steps after the last validation
    assert step_of(tmp_path / "checkpoints" / "last.ckpt") == 2 * EVERY + 2
