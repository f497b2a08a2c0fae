"""Two-process CPU DDP (gloo) through train.py, as a user launches it: GRPO and SFT complete, the ranks
train the same weights, and the duration sampler deals each rank its own batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from tests.helpers import run_script

# ct_report on the tiny model with small volumes: 48 train samples, each costing the same
# estimate_vision_tokens(8 frames, 56x56) = 16 tokens.
CT_REPORT_TINY_DDP = [
    "experiment=ct_report_sft",
    "preset=tiny",
    "strategy=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.max_epochs=1",
    "trainer.accumulate_grad_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.val_check_interval=1.0",  # the tiny preset validates every N steps
    "data.synth_cases=48",  # the preset trains on 384
    "data.frames.num_frames=8",
    "data.frames.size=[56,56]",
    "data.eval_batch_size=1",
    "task.module.generation.max_new_tokens=4",
    "~callbacks.hf_export",
]


class RecordTraining(pl.Callback):
    """Test-only callback (``+callbacks.record._target_=tests.test_ddp.RecordTraining``): each rank
    writes the sample ids of its training batches (``batches.rank{r}.json``: epoch -> list of batches)
    and its final trainable weights (``weights.rank{r}.pt``) into ``out_dir``."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.batches: dict[int, list[list[str]]] = {}

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batches.setdefault(trainer.current_epoch, []).append(list(batch.ids))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        record = {"world_size": trainer.world_size, "epochs": self.batches}
        (self.out_dir / f"batches.rank{rank}.json").write_text(json.dumps(record))
        weights = {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
        torch.save(weights, self.out_dir / f"weights.rank{rank}.pt")


def run_train(overrides: list[str]) -> str:
    """``python train.py *overrides`` offline; returns stdout + stderr, failing the test on a non-zero exit."""
    result = run_script(["train.py", *overrides])
    return result.stderr + result.stdout


def record_overrides(record: Path) -> list[str]:
    return [f"+callbacks.record._target_={__name__}.RecordTraining", f"+callbacks.record.out_dir={record}"]


def load_batches(record: Path, world_size: int = 2) -> list[dict[str, list[list[str]]]]:
    """Per rank: epoch (as a string) -> that rank's batches of sample ids."""
    out = []
    for rank in range(world_size):
        data = json.loads((record / f"batches.rank{rank}.json").read_text())
        assert data["world_size"] == world_size
        out.append(data["epochs"])
    return out


@pytest.fixture(scope="module")
def ct_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``paths.data_dir`` shared by the ct_report runs: the first writes the synthetic data, the rest reuse it."""
    return tmp_path_factory.mktemp("ddp_data")


def train_ids(data_dir: Path) -> list[str]:
    rows = json.loads((data_dir / "synthetic" / "ct_report" / "train.json").read_text())
    return [row["id"] for row in rows]


@pytest.mark.slow
def test_grpo_under_two_process_cpu_ddp_completes(tmp_path: Path) -> None:
    output = run_train(
        [
            "experiment=mcqa_grpo",
            "preset=tiny",
            "warm_start_command=null",  # a random start is enough here
            "strategy=ddp",
            "trainer.devices=2",
            "trainer.max_steps=2",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.check_val_every_n_epoch=1",
            "trainer.val_check_interval=1.0",
            "data.batch_size=1",
            "task.module.grpo.num_generations=2",
            "task.module.generation.max_new_tokens=8",
            f"paths.log_dir={tmp_path}/logs",
            f"paths.data_dir={tmp_path}/data",
        ]
    )
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    (run_dir,) = (tmp_path / "logs" / "mcqa_grpo" / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_sft_under_two_process_cpu_ddp_trains_the_same_weights_on_both_ranks(
    tmp_path: Path, ct_data_dir: Path
) -> None:
    """Lightning's DistributedSampler splits the fixed-size batches; DDP's gradient all-reduce keeps
    the replicas identical, and the checkpoint holds those weights."""
    record = tmp_path / "record"
    output = run_train(
        [
            *CT_REPORT_TINY_DDP,
            "trainer.max_steps=2",
            "trainer.limit_train_batches=2",
            "data.batch_size=2",
            *record_overrides(record),
            f"paths.log_dir={tmp_path}/logs",
            f"paths.data_dir={ct_data_dir}",
        ]
    )
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    rank0, rank1 = load_batches(record)
    assert [len(b) for b in rank0["0"]] == [len(b) for b in rank1["0"]] == [2, 2]
    seen0 = {i for b in rank0["0"] for i in b}
    seen1 = {i for b in rank1["0"] for i in b}
    assert len(seen0) == len(seen1) == 4 and not seen0 & seen1  # each rank its own samples

    weights0 = torch.load(record / "weights.rank0.pt")
    weights1 = torch.load(record / "weights.rank1.pt")
    assert weights0.keys() == weights1.keys() and weights0
    for name, value in weights0.items():
        assert torch.equal(value, weights1[name]), name

    (run_dir,) = (tmp_path / "logs" / "ct_report_sft" / "runs").iterdir()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert checkpoint["state_dict"].keys() == weights0.keys()  # trainable weights only
    for name, value in weights0.items():
        assert torch.equal(checkpoint["state_dict"][name], value), name
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("drop_last", "batches_per_rank"),
    # 48 samples of cost 16, target 112: 6 batches of 7 and a trailing 6 = 7 batches for 2 ranks.
    [(False, 4), (True, 3)],
)
def test_duration_sampler_under_ddp_deals_each_rank_its_own_batches(
    tmp_path: Path, ct_data_dir: Path, drop_last: bool, batches_per_rank: int
) -> None:
    """drop_last=False: the odd 7th batch slot is padded by repeating the epoch's first batch, so the
    ranks cover every sample and overlap in exactly that batch; drop_last=True: the last batch of the
    epoch order is dropped, so the ranks are disjoint and miss exactly those samples. Either way both
    ranks take the same number of steps."""
    record = tmp_path / "record"
    run_train(
        [
            *CT_REPORT_TINY_DDP,
            "trainer.use_distributed_sampler=false",
            f"data.duration_batching={{target_batch_duration: 112, drop_last: {str(drop_last).lower()}, seed: 3}}",
            *record_overrides(record),
            f"paths.log_dir={tmp_path}/logs",
            f"paths.data_dir={ct_data_dir}",
        ]
    )
    rank0, rank1 = (epochs["0"] for epochs in load_batches(record))
    assert len(rank0) == len(rank1) == batches_per_rank  # equal steps: DDP cannot hang
    sizes = sorted(len(b) for b in rank0 + rank1)
    batches0 = [frozenset(b) for b in rank0]
    batches1 = [frozenset(b) for b in rank1]
    everything = set(train_ids(ct_data_dir))
    assert len(everything) == 48
    seen0, seen1 = set().union(*batches0), set().union(*batches1)
    assert sum(map(len, batches0)) == len(seen0) and sum(map(len, batches1)) == len(seen1)  # no repeats
    if drop_last:
        assert not seen0 & seen1
        assert len(everything - (seen0 | seen1)) in (6, 7)  # the one dropped batch
        assert sizes.count(7) >= 5
    else:
        assert seen0 | seen1 == everything
        (repeated,) = set(batches0) & set(batches1)  # the padding: rank 1's last = epoch's first batch
        assert seen0 & seen1 == repeated and batches1[-1] == batches0[0] == repeated
        assert sizes == sorted([7] * 6 + [6] + [len(repeated)])
