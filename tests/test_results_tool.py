"""The results table: before / after / constant / margin and the reward's fifths, from hand-made scalars
and from real TensorBoard events."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from vlmlab.tools.results import fifth_means, main, markdown, read_scalars, summarise


def test_fifth_means_by_hand() -> None:
    assert fifth_means([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) == (1.5, 9.5)
    assert fifth_means([2.0, 4.0]) == (2.0, 4.0)  # fewer than five values: one value each end
    with pytest.raises(ValueError):
        fifth_means([])


def test_summarise_picks_the_overall_baselined_metric() -> None:
    scalars = {
        "val/mcqa/accuracy": [(96, 0.6), (0, 0.1), (48, 0.4)],  # out of order on purpose
        "val/mcqa/accuracy_constant": [(0, 0.3)],
        "val/mcqa/accuracy/synth_colour": [(0, 0.0), (96, 0.9)],
        "val/mcqa/accuracy/synth_colour_constant": [(0, 0.2)],
        "train/reward/total": [(s, float(s)) for s in range(10)],
    }
    result = summarise("r", scalars)
    assert (result.metric, result.first_step, result.first, result.last_step, result.last) == (
        "val/mcqa/accuracy",
        0,
        0.1,
        96,
        0.6,
    )
    assert result.constant == 0.3 and result.margin == pytest.approx(0.3)
    assert (result.reward_first_fifth, result.reward_last_fifth) == (0.5, 8.5)
    assert "| r | val/mcqa/accuracy | 0.100 | 0.600 (96) | 0.300 | +0.300 | 0.500 / 8.500 |" in markdown(
        [result]
    )


def test_summarise_names_what_is_missing() -> None:
    with pytest.raises(KeyError, match="no \\*/\\*_constant scalar"):
        summarise("r", {"val/x/y": [(0, 1.0)]})
    with pytest.raises(KeyError, match="no scalar 'val/x/z'"):
        summarise("r", {"val/x/y": [(0, 1.0)]}, metric="val/x/z")


def test_reads_a_run_folder_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writer = SummaryWriter(str(tmp_path / "run" / "tensorboard" / "version_0"))
    for step, value in [(0, 0.2), (10, 0.7)]:
        writer.add_scalar("val/grounding/miou", value, step)
    writer.add_scalar("val/grounding/miou_constant", 0.25, 0)
    writer.close()
    assert read_scalars(tmp_path / "run")["val/grounding/miou"] == [
        (0, pytest.approx(0.2)),
        (10, pytest.approx(0.7)),
    ]
    assert main([str(tmp_path / "run")]) == 0
    assert "| val/grounding/miou | 0.200 | 0.700 (10) | 0.250 | +0.450 |" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 1
    assert "no tensorboard/ folder" in capsys.readouterr().err
