"""Two-process CPU DDP (gloo) through train.py, as a user launches it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.mark.slow
def test_grpo_under_two_process_cpu_ddp_completes(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "train.py",
        "experiment=mcqa_grpo",
        "preset=tiny",
        "strategy=ddp",
        "trainer.devices=2",
        "trainer.max_steps=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
        "data.batch_size=1",
        "task.module.grpo.num_generations=2",
        "task.module.generation.max_new_tokens=8",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, **OFFLINE}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr + result.stdout
    (run_dir,) = (tmp_path / "logs" / "mcqa_grpo" / "runs").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
