"""Checks that need a CUDA GPU (marker ``gpu``; skipped on CPU machines): bf16 and every DeepSpeed stage
on the tiny models through train.py and evaluate.py, as a user runs them on one GPU.

    python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.test_ddp import run_train
from tests.test_entry_points import run, scalars

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ON_ONE_GPU = ["trainer.accelerator=gpu", "trainer.devices=1", "trainer.precision=bf16-mixed"]
SHORT = ["trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1", "trainer.limit_val_batches=2"]


@pytest.mark.parametrize(
    "strategy", ["auto", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"]
)
def test_sft_in_bf16_under_each_strategy_trains_checkpoints_and_exports(
    strategy: str, tmp_path: Path
) -> None:
    run_dir = run(
        "train.py",
        ["experiment=ct_report_sft", "preset=tiny", f"strategy={strategy}", *ON_ONE_GPU, *SHORT],
        tmp_path,
        "train",
    )
    loss = [e.value for e in scalars(run_dir).Scalars("train/loss")]
    assert loss and all(v == v for v in loss), loss  # finite (NaN != NaN)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()  # a folder under DeepSpeed
    assert (run_dir / "checkpoints" / "hf" / "config.json").exists()  # ZeRO-3: gathered before writing
    evaluated = run(
        "evaluate.py",
        [
            "experiment=ct_report_sft",
            "preset=tiny",
            f"strategy={strategy}",
            *ON_ONE_GPU,
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            "trainer.limit_test_batches=2",
        ],
        tmp_path,
        "evaluate",
    )
    assert "test/report/rouge_l" in json.loads((evaluated / "metrics.json").read_text())


@pytest.mark.parametrize("strategy", ["auto", "deepspeed_zero3"])
def test_grpo_in_bf16_generates_and_steps(strategy: str, tmp_path: Path) -> None:
    run_train(
        [
            "experiment=mcqa_grpo",
            "preset=tiny",
            "warm_start_command=null",  # a random start is enough here
            f"strategy={strategy}",
            *ON_ONE_GPU,
            *SHORT,
            "trainer.max_steps=4",
            f"paths.log_dir={tmp_path}/logs",
            f"paths.data_dir={tmp_path}/data",
            f"hydra.run.dir={tmp_path}/run",
        ]
    )
    assert "train/reward/total" in scalars(tmp_path / "run").Tags()["scalars"]
