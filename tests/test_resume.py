"""Exact resume (``ckpt_path``): a run stopped mid-epoch and resumed from its checkpoint sees the same
batches, draws the same random numbers and ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import Dataset, DistributedSampler

from tests.helpers import compose_config
from vlmlab.callbacks.rng_state import collect_rng_states, restore_rng_states
from vlmlab.data.base import VisionLanguageDataModule
from vlmlab.data.sampler import ResumableSampler, epoch_indices
from vlmlab.run import train

# ---------------------------------------------------------------- the shuffling sampler, by hand


def test_epoch_indices_by_hand() -> None:
    # 5 samples, 2 ranks, no shuffle: padded order 0 1 2 3 4 0, rank r takes r, r+2, r+4.
    assert epoch_indices(5, 0, 0, shuffle=False, num_replicas=2, rank=0) == [0, 2, 4]
    assert epoch_indices(5, 0, 0, shuffle=False, num_replicas=2, rank=1) == [1, 3, 0]
    # drop_last truncates to 4: 0 1 2 3.
    assert epoch_indices(5, 0, 0, shuffle=False, num_replicas=2, rank=1, drop_last=True) == [1, 3]
    # 2 samples over 3 ranks: the order repeats (0 1 0).
    assert [epoch_indices(2, 0, 0, shuffle=False, num_replicas=3, rank=r) for r in range(3)] == [
        [0],
        [1],
        [0],
    ]
    # shuffled: randperm seeded with seed + epoch.
    generator = torch.Generator().manual_seed(7 + 3)
    assert epoch_indices(6, 3, 7) == torch.randperm(6, generator=generator).tolist()


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "replicas"), [(1, 1), (7, 1), (7, 2), (7, 3), (9, 3), (2, 4)])
def test_epoch_indices_are_torch_distributed_samplers(n: int, replicas: int, drop_last: bool) -> None:
    for rank in range(replicas):
        for epoch in (0, 1, 5):
            torch_sampler = DistributedSampler(
                range(n), replicas, rank, shuffle=True, seed=11, drop_last=drop_last
            )
            torch_sampler.set_epoch(epoch)
            if len(torch_sampler) == 0:
                continue
            assert epoch_indices(n, epoch, 11, True, replicas, rank, drop_last) == list(torch_sampler)


def test_resumable_sampler_skips_once_and_only_in_its_epoch() -> None:
    sampler = ResumableSampler(10, seed=3, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == len(sampler) == 5
    sampler.resume(2, 3)
    assert list(sampler) == full[3:]  # the rest of epoch 2
    assert list(sampler) == full  # then whole epochs again
    sampler.resume(2, 3)
    sampler.set_epoch(2)  # Lightning sets the (same) epoch after the iterator was made: kept
    assert list(sampler) == full[3:]
    sampler.resume(2, 3)
    sampler.set_epoch(3)  # another epoch: the position is dropped
    assert len(list(sampler)) == 5
    assert isinstance(sampler, DistributedSampler)  # so Lightning does not replace it under DDP
    with pytest.raises(ValueError, match="samples_done=6"):
        sampler.resume(0, 6)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(collect_rng_states(), tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand())) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


# ---------------------------------------------------------------- the datamodule under Lightning


class Numbers(Dataset):
    """Sample i is i; its cost (for duration batching) is 1 + i % 3."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def sample_costs(self) -> list[float]:
        return [1.0 + i % 3 for i in range(self.n)]


class NumbersCollator:
    def train(self, items: list[int]) -> torch.Tensor:
        return torch.tensor(items)

    eval = train


class NumbersData(VisionLanguageDataModule):
    def __init__(self, n: int = 23, **kwargs: Any):
        super().__init__(root="unused", collator=NumbersCollator(), **kwargs)
        self.n = n

    def build_split(self, split: str) -> Dataset | None:
        return Numbers(self.n) if split == "train" else None


class Recorder(pl.LightningModule):
    """Records the samples of every training batch; its weight moves by their sum."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.tolist())
        return self.weight * batch.float().sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StopAt(pl.Callback):
    """Raise before the batch after optimizer step ``step`` (its checkpoint is written by then)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Interrupted(f"stopped at step {self.step}")


class Interrupted(RuntimeError):
    pass


def fit_numbers(root: Path, data: dict, stop: int | None, ckpt: Path | None, **trainer_kwargs: Any) -> list:
    module = Recorder()
    callbacks = [
        pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_last=True, save_top_k=0)
    ]
    callbacks += [StopAt(stop)] if stop is not None else []
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
        **trainer_kwargs,
    )
    datamodule = NumbersData(seed=5, **data)
    if stop is None:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    else:
        with pytest.raises(Interrupted):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    return module.seen


@pytest.mark.parametrize(
    ("data", "trainer_kwargs", "stop"),
    [
        ({"batch_size": 3}, {}, 5),  # mid epoch 0 (8 batches an epoch, the last one short)
        ({"batch_size": 3}, {}, 8),  # exactly at the end of epoch 0
        ({"batch_size": 3}, {"limit_train_batches": 5}, 7),  # mid epoch 1 with a limit
        ({"batch_size": 3, "num_workers": 2}, {}, 11),  # workers fetch ahead of training
        ({"batch_size": 4}, {"accumulate_grad_batches": 2}, 4),  # optimizer step 4 = batch 8, epoch 1
        ({"duration_batching": {"target_batch_duration": 6.0, "seed": 1}}, {}, 6),
        ({"duration_batching": {"target_batch_duration": 6.0}, "num_workers": 2}, {}, 15),
    ],
)
def test_datamodule_resumes_with_the_batches_an_uninterrupted_run_sees(
    tmp_path: Path, data: dict, trainer_kwargs: dict, stop: int
) -> None:
    full = fit_numbers(tmp_path / "full", data, None, None, **trainer_kwargs)
    first = fit_numbers(tmp_path / "cut", data, stop, None, **trainer_kwargs)
    rest = fit_numbers(tmp_path / "cut", data, None, tmp_path / "cut" / "last.ckpt", **trainer_kwargs)
    assert len(full) > len(first) > 0
    assert first + rest == full


def test_resume_with_another_batch_size_is_refused(tmp_path: Path) -> None:
    fit_numbers(tmp_path, {"batch_size": 3}, 2, None)
    with pytest.raises(ValueError, match="batch_size=3, this run has 4"):
        fit_numbers(tmp_path, {"batch_size": 4}, None, tmp_path / "last.ckpt")


# ---------------------------------------------------------------- tiny Qwen-VL runs through train()

SMALL_CT = "data.synth_cases=12"  # a smaller synthetic set writes faster; an epoch uses 6 cases


class SaveTrainableWeights(pl.Callback):
    """At the end of fit, write the module's trainable weights to ``path``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(
            {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}, self.path
        )


def train_run(
    tmp: Path, name: str, overrides: list[str], stop: int | None = None, resume: bool = False
) -> Path:
    """``train(cfg)`` with its run folder at ``tmp/name/run``; returns the folder."""
    run_dir = tmp / name / "run"
    extra = [
        "+callbacks.final._target_=tests.test_resume.SaveTrainableWeights",
        f"+callbacks.final.path={tmp / name}/final.pt",
    ]
    if stop is not None:
        extra += ["+callbacks.stop._target_=tests.test_resume.StopAt", f"+callbacks.stop.step={stop}"]
    if resume:
        extra.append("ckpt_path=last")  # Lightning looks in this run folder's checkpoints/
    cfg = compose_config("train", [*overrides, *extra, f"paths.data_dir={tmp}/data"], tmp / name)
    if stop is None:
        train(cfg)
    else:
        with pytest.raises(Interrupted):
            train(cfg)
    return run_dir


def losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def assert_resume_is_exact(tmp: Path, overrides: list[str], stop: int) -> None:
    full = train_run(tmp, "full", overrides)
    train_run(tmp, "cut", overrides, stop=stop)
    # The same run folder, as `python train.py hydra.run.dir=<the cut run's folder> ckpt_path=last`.
    resumed = train_run(tmp, "cut", overrides, resume=True)
    expected = torch.load(tmp / "full" / "final.pt")
    got = torch.load(tmp / "cut" / "final.pt")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, different[:5]
    assert losses(resumed) == losses(full)
    assert len(losses(full)) > stop  # steps are logged from 0: some after the stop


def quick(every: int) -> list[str]:
    return [
        "preset=tiny",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1",
        "trainer.accumulate_grad_batches=1",
        f"+callbacks.model_checkpoint.every_n_train_steps={every}",
        "callbacks.model_checkpoint.monitor=null",  # else saves wait for val/loss (no validation here)
        "callbacks.model_checkpoint.save_top_k=0",
        "callbacks.hf_export=null",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


@pytest.mark.slow
def test_sft_resumed_mid_epoch_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    overrides = [
        "experiment=ct_report_sft",
        *quick(4),
        "trainer.limit_train_batches=3",
        "data.batch_size=2",
        SMALL_CT,
    ]
    assert_resume_is_exact(tmp_path, overrides, stop=4)  # 3 batches an epoch: step 4 is mid epoch 1


@pytest.mark.slow
def test_sft_with_duration_batching_and_workers_resumes_exactly(tmp_path: Path) -> None:
    overrides = [
        "experiment=ct_report_sft",
        *quick(2),
        SMALL_CT,
        "trainer.limit_train_batches=3",
        "data.duration_batching={target_batch_duration: 40}",  # tiny volumes cost 16 tokens: 2 a batch
        "data.num_workers=2",
    ]
    assert_resume_is_exact(tmp_path, overrides, stop=2)


@pytest.mark.slow
def test_grpo_with_reused_rollouts_resumes_exactly(tmp_path: Path) -> None:
    overrides = [
        "experiment=mcqa_grpo",
        "warm_start_command=null",  # a random start is enough here
        *quick(3),
        "data.synth_rows=8",
        "trainer.limit_train_batches=2",
        "trainer.max_epochs=3",
        "data.batch_size=2",
        "task.module.generation.max_new_tokens=8",
        "task.module.grpo.num_generations=2",
        # Rollouts at steps 1, 3, 5 (1-based), reused by 2, 4, 6: the resumed run first reuses the
        # checkpointed buffer (step 4), then samples new rollouts (step 5: the RNG states matter).
        "task.module.grpo.num_iterations=2",
        "optim.lr=1e-3",
    ]
    assert_resume_is_exact(tmp_path, overrides, stop=3)  # 2 batches an epoch: mid epoch 1
    # The last checkpoint (step 6) holds the step state, readable without unpickling classes.
    checkpoint = torch.load(tmp_path / "cut" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["grpo_step_state"]
    assert state["micro_step"] == 6 and set(state["buffer"]) == {0}
