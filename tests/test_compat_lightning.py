"""The Lightning internals vlmlab reads (vlmlab.compat.lightning), checked on the installed Lightning."""

from __future__ import annotations

from types import SimpleNamespace

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from torch.utils.data import DataLoader

from vlmlab.compat.lightning import (
    LIGHTNING_VERSION,
    batches_done,
    generation_sync_kwargs,
    uses_distributed_sampler,
    zero_stage_3,
)


def test_lightning_is_the_version_these_readings_were_written_for() -> None:
    # A new Lightning may move these attributes: re-read vlmlab/compat/lightning.py first.
    assert pl.__version__ == LIGHTNING_VERSION


class Counter(pl.LightningModule):
    """Records what the readings say at every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.done: list[int] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.done.append(batches_done(self.trainer))
        return (self.weight * batch.float()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_readings_on_a_real_trainer(tmp_path) -> None:
    module = Counter()
    for flag in (True, False):
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=flag,
            default_root_dir=str(tmp_path),
        )
        assert uses_distributed_sampler(trainer) is flag
    module.done.clear()
    trainer.fit(module, train_dataloaders=DataLoader(torch.arange(3), batch_size=1))
    # Inside a step the batch is not yet processed: 0, 1, 2 in each epoch (the count restarts).
    assert module.done == [0, 1, 2, 0, 1, 2]
    assert batches_done(trainer) == 3


def test_zero_stage_3_and_generation_sync() -> None:
    assert zero_stage_3(DeepSpeedStrategy(stage=3)) and zero_stage_3(
        DeepSpeedStrategy(stage=3, offload_optimizer=True)
    )
    assert zero_stage_3(DeepSpeedStrategy(config={"zero_optimization": {"stage": 3}}))
    assert not zero_stage_3(DeepSpeedStrategy(stage=2))
    assert (
        not zero_stage_3(DDPStrategy())
        and not zero_stage_3(SingleDeviceStrategy("cpu"))
        and not zero_stage_3(None)
    )
    assert zero_stage_3(SimpleNamespace(zero_stage_3=True))
    assert not zero_stage_3(SimpleNamespace(config={"train_batch_size": 8}))
    assert generation_sync_kwargs(DeepSpeedStrategy(stage=3)) == {"synced_gpus": True}
    assert generation_sync_kwargs(DDPStrategy()) == {}
