"""Issue 4's demonstration: brats_sft then brats_grpo initialised from it, on CPU with preset=tiny.

The GRPO reward curve (TensorBoard ``train/reward/total``) must end higher than it starts: mean over
the last fifth of the steps above the mean over the first fifth. The chain is seeded end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import run_script


def train(overrides: list[str], tmp: Path) -> Path:
    args = ["train.py", *overrides, f"paths.log_dir={tmp}/logs", f"paths.data_dir={tmp}/data"]
    run_script(args, timeout=1200)
    (run_dir,) = (tmp / "logs" / overrides[0].split("=")[1] / "runs").iterdir()
    return run_dir


@pytest.mark.slow
def test_grpo_from_sft_raises_the_brats_reward(tmp_path: Path) -> None:
    sft = train(["experiment=brats_sft", "preset=tiny"], tmp_path)
    grpo = train(
        ["experiment=brats_grpo", "preset=tiny", f"model.init_from={sft / 'checkpoints' / 'last.ckpt'}"],
        tmp_path,
    )
    events = EventAccumulator(str(grpo / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    rewards = [e.value for e in events.Scalars("train/reward/total")]
    fifth = len(rewards) // 5
    first, last = sum(rewards[:fifth]) / fifth, sum(rewards[-fifth:]) / fifth
    print(f"train/reward/total over {len(rewards)} steps: first fifth {first:.3f}, last fifth {last:.3f}")
    assert len(rewards) == 30
    assert last > first
    tags = set(events.Tags()["scalars"])
    for component in (
        "think_format",
        "video_keyword",
        "json_format",
        "iou_3d",
        "peak_slice",
        "tumor_ratio",
        "non_repetition",
    ):
        assert f"train/reward/{component}" in tags
    assert {
        "train/kl",
        "train/clip_ratio_region",
        "train/advantage_std",
        "train/frac_zero_std_groups",
        "train/completion_length",
        "val/reward/total",
    } <= tags
    assert "train/completions" in {t.rsplit("/text_summary", 1)[0] for t in events.Tags()["tensors"]}
