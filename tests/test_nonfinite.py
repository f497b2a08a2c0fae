"""A non-finite loss is never applied: all ranks skip together, DeepSpeed stops with the step named."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DeepSpeedStrategy

from vlmlab.modules.common import skip_nonfinite_loss


class Ranks:
    """A strategy stand-in whose other ranks vote ``others`` in ``reduce_boolean_decision``."""

    def __init__(self, others: bool):
        self.others = others
        self.votes: list[bool] = []

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        self.votes.append(decision)
        return decision and self.others if all else decision or self.others


def module_on(strategy: object) -> tuple[pl.LightningModule, list[str]]:
    module = pl.LightningModule()
    module.trainer = SimpleNamespace(strategy=strategy, global_step=0)
    logged: list[str] = []
    module.log = lambda name, *args, **kwargs: logged.append(name)  # no logger connector here
    return module, logged


def test_a_finite_loss_on_every_rank_is_applied() -> None:
    module, logged = module_on(Ranks(others=True))
    assert not skip_nonfinite_loss(module, torch.tensor(1.5), ["a"])
    assert logged == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_loss_here_is_skipped_and_counted(value: float) -> None:
    strategy = Ranks(others=True)
    module, logged = module_on(strategy)
    assert skip_nonfinite_loss(module, torch.tensor(value), ["a"])
    assert strategy.votes == [False] and logged == ["train/skipped_nonfinite"]


def test_a_non_finite_loss_on_another_rank_skips_this_rank_too() -> None:
    # Under DDP a rank that stepped alone would wait forever in the gradient all-reduce.
    module, logged = module_on(Ranks(others=False))
    assert skip_nonfinite_loss(module, torch.tensor(0.7), ["a"])
    assert logged == ["train/skipped_nonfinite"]


def test_deepspeed_cannot_skip_so_the_run_stops_naming_step_and_batch() -> None:
    strategy = DeepSpeedStrategy(stage=2)
    strategy.reduce_boolean_decision = lambda decision, all=True: decision  # one process, no group
    module, _ = module_on(strategy)
    with pytest.raises(FloatingPointError, match=r"step 0 \(batch \['case_7'\]"):
        skip_nonfinite_loss(module, torch.tensor(float("nan")), ["case_7"])


def test_without_a_trainer_the_local_loss_decides() -> None:
    module = pl.LightningModule()
    module.log = lambda *args, **kwargs: None
    assert not skip_nonfinite_loss(module, torch.tensor(2.0), ["a"])
    assert skip_nonfinite_loss(module, torch.tensor(float("nan")), ["a"])
