"""SFT then GRPO from its checkpoint, on CPU with preset=tiny: the learning a user is promised.

The tiny GRPO presets refuse to start from the random backbone (every reward would be zero), naming the
SFT command. The slow chain is ``make chain EXPERIMENT=mcqa``: the SFT model beats the constant answer, GRPO starts
from exactly its weights (step-0 validation equals SFT's last) and raises its reward, so a sign error or a
broken completion mask fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import compose_config, run_script
from vlmlab.exits import CleanError
from vlmlab.run import train
from vlmlab.tools.results import read_scalars, summarise


@pytest.mark.parametrize("experiment", ["brats_grpo", "mcqa_grpo", "vtg_grpo"])
def test_tiny_grpo_refuses_a_random_start_naming_the_sft_command(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"experiment={experiment}", "preset=tiny"], tmp_path)
    sft = experiment.replace("_grpo", "_sft")
    # run.train turns the refusal into the one-line error Hydra prints (vlmlab.exits.CleanError).
    with pytest.raises(CleanError, match=f"run `python train.py experiment={sft} preset=tiny` first"):
        train(cfg)


def chain(tmp: Path, name: str, sft: list[str], grpo: list[str]) -> tuple[Path, Path]:
    """``train.py`` SFT then GRPO from its last checkpoint (as ``make chain``); returns both run folders."""
    common = [f"paths.log_dir={tmp}/logs", f"paths.data_dir={tmp}/data"]
    run_script(
        ["train.py", f"experiment={name}_sft", "preset=tiny", f"hydra.run.dir={tmp}/sft", *common, *sft],
        timeout=1200,
    )
    checkpoint = tmp / "sft" / "checkpoints" / "last.ckpt"
    run_script(
        [
            "train.py",
            f"experiment={name}_grpo",
            "preset=tiny",
            f"hydra.run.dir={tmp}/grpo",
            f"model.init_from={checkpoint}",
            *common,
            *grpo,
        ],
        timeout=1200,
    )
    return tmp / "sft", tmp / "grpo"


@pytest.mark.slow
def test_mcqa_sft_reads_the_pixels_and_grpo_raises_its_reward(tmp_path: Path) -> None:
    sft, grpo = chain(tmp_path, "mcqa", sft=[], grpo=[])
    learned = summarise("sft", read_scalars(sft))
    print(learned)
    assert learned.first == 0.0 and learned.margin is not None
    assert learned.margin > 0.10  # reads the lesion's colour: far above the most frequent letter
    tuned = summarise("grpo", read_scalars(grpo), metric="val/mcqa/accuracy")
    print(tuned)
    assert tuned.first_step == 0 and tuned.first == pytest.approx(learned.last)  # starts where SFT ended
    assert tuned.reward_first_fifth is not None and tuned.reward_last_fifth is not None
    assert tuned.reward_first_fifth > 0.5  # formatted answers from the start
    # The mean over 24 steps of 64 rollouts: the direction of the update. Greedy validation is
    # noisier step to step (seed 42: 0.656, 0.547 at step 19, 0.742 at step 119), so it is reported, not asserted.
    assert tuned.reward_last_fifth > tuned.reward_first_fifth
