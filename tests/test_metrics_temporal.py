"""Temporal grounding metrics against hand-computed R1@m and mIoU."""

from __future__ import annotations

import math

import pytest

from vlmlab.metrics.temporal import TemporalGroundingMetrics
from vlmlab.rewards import temporal as temporal_reward
from vlmlab.tasks.grounding import answer_iou


def seconds_target(start: float, end: float, duration: float = 10.0) -> dict:
    return {
        "timestamp": [start, end],
        "duration": duration,
        "relative": False,
        "num_bins": 100,
        "temporal_tokens": False,
    }


def test_answer_iou_by_hand_in_every_answer_format() -> None:
    gt = seconds_target(2.0, 6.0)
    assert answer_iou("<answer>2.0 to 6.0</answer>", gt) == (1.0, True)
    assert answer_iou("<answer>4.0 to 8.0</answer>", gt) == pytest.approx((2 / 6, True))
    # The span is clipped to the clip, as the reward does: [8, 14] -> [8, 10] against [6, 10].
    assert answer_iou("<answer>8.0 to 14.0</answer>", seconds_target(6.0, 10.0)) == (0.5, True)
    # Relative fractions and temporal tokens of a 20 s clip: 0.25..0.5 is 5..10 s.
    relative = {**seconds_target(5.0, 10.0, 20.0), "relative": True}
    assert answer_iou("<answer>0.25 to 0.50</answer>", relative) == (1.0, True)
    tokens = {**relative, "temporal_tokens": True}
    assert answer_iou("<answer><25> to <50></answer>", tokens) == (1.0, True)
    # Unparsable: no answer, words, a reversed or empty span.
    for text in (
        "2.0 to 6.0",
        "<answer>soon</answer>",
        "<answer>6.0 to 2.0</answer>",
        "<answer>3 to 3</answer>",
    ):
        assert answer_iou(text, gt) == (0.0, False)


def test_answer_iou_is_the_rewards_temporal_iou() -> None:
    gt = seconds_target(1.0, 4.5)
    for text in ("<answer>0.5 to 3.0</answer>", "<answer>2 to 9</answer>", "<answer>x</answer>", ""):
        assert answer_iou(text, gt)[0] == temporal_reward.score(text, gt)["temporal_iou"]


def test_recall_at_thresholds_and_miou_by_hand_with_boundaries() -> None:
    metric = TemporalGroundingMetrics()
    # IoUs 1, 0.5 (boundary), 0 (unparsable).
    metric.update(
        ["<answer>2.0 to 6.0</answer>", "<answer>2.0 to 4.0</answer>", "I cannot tell"],
        [seconds_target(2.0, 6.0)] * 3,
    )
    # IoUs 0.3 and 0.7 (boundaries: 3/10 and 7/10), 0 (reversed span: unparsable).
    metric.update(
        ["<answer>0.0 to 3.0</answer>", "<answer>0 to 7</answer>", "<answer>7.0 to 3.0</answer>"],
        [seconds_target(0.0, 10.0)] * 3,
    )
    scores = metric.compute()
    assert set(scores) == {"r1_at_0.3", "r1_at_0.5", "r1_at_0.7", "miou", "unparsable"}
    assert scores["r1_at_0.3"] == pytest.approx(4 / 6)  # 1, 0.5, 0.3, 0.7
    assert scores["r1_at_0.5"] == pytest.approx(3 / 6)  # 1, 0.5, 0.7
    assert scores["r1_at_0.7"] == pytest.approx(2 / 6)  # 1, 0.7
    assert scores["miou"] == pytest.approx((1 + 0.5 + 0.3 + 0.7) / 6)
    assert scores["unparsable"] == pytest.approx(2 / 6)
    assert TemporalGroundingMetrics.group == "grounding"


def test_just_below_a_threshold_misses_and_decimal_rounding_still_hits() -> None:
    metric = TemporalGroundingMetrics()
    metric.update(["<answer>0.0 to 2.99</answer>"], [seconds_target(0.0, 10.0)])  # IoU 0.299
    assert metric.compute()["r1_at_0.3"] == 0.0
    metric.reset()
    # 0.3 of a 10 s clip is 3.0000000000000004 s in floats: still IoU 0.3, still a hit.
    relative = {**seconds_target(0.0, 10.0), "relative": True}
    metric.update(["<answer>0.00 to 0.30</answer>"], [relative])
    assert metric.compute()["r1_at_0.3"] == 1.0


def test_reset_forgets_and_empty_is_nan() -> None:
    metric = TemporalGroundingMetrics(thresholds=(0.5,))
    metric.update(["<answer>2.0 to 6.0</answer>"], [seconds_target(2.0, 6.0)])
    assert metric.compute() == {"r1_at_0.5": 1.0, "miou": 1.0, "unparsable": 0.0}
    metric.reset()
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update(["nothing"], [seconds_target(2.0, 6.0)])
    assert metric.compute() == {"r1_at_0.5": 0.0, "miou": 0.0, "unparsable": 1.0}


def test_bad_targets_and_settings_raise_clearly() -> None:
    metric = TemporalGroundingMetrics()
    with pytest.raises(ValueError, match="duration"):
        metric.update(["x"], [{**seconds_target(0.0, 1.0), "duration": 0}])
    with pytest.raises(ValueError, match="timestamp"):
        metric.update(["x"], [seconds_target(5.0, 2.0)])
    with pytest.raises(ValueError, match="TemporalFormat"):
        metric.update(["x"], [{**seconds_target(0.0, 1.0), "temporal_tokens": True}])  # tokens need relative
    with pytest.raises(ValueError, match="2 predictions for 1 targets"):
        metric.update(["a", "b"], [seconds_target(0.0, 1.0)])
    with pytest.raises(ValueError, match="thresholds"):
        TemporalGroundingMetrics(thresholds=(0.0, 0.5))
