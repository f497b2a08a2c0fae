"""BraTS 3D detection metrics against hand-computed IoU, hit rates and errors."""

from __future__ import annotations

import json
import math

import pytest

from vlmlab.metrics.brats import BratsDetectionMetrics, score_answer
from vlmlab.rewards import brats_3d

# Volume 10 * 10 * 4 = 400 frame voxels.
TARGET = {"bbox_3d": [10, 10, 2, 20, 20, 6], "peak_slice": 4, "tumor_ratio": 0.02}


def answer(box: object, peak: object = 4, ratio: object = 0.02, wrap: bool = False) -> str:
    data = {"bbox_3d": box, "peak_slice": peak, "tumor_ratio": ratio}
    text = json.dumps([data] if wrap else data)
    return f"<think>This video shows a tumour.</think><answer>{text}</answer>"


def test_score_answer_by_hand() -> None:
    assert score_answer(answer([10, 10, 2, 20, 20, 6]), TARGET) == (1.0, True, 0.0, 0.0)
    # Half the depth: IoU 200 / 400; peak 7 vs 4; ratio 0.03 vs 0.02 is a 50% error. Seed-style [{...}].
    iou, valid, peak, ratio = score_answer(answer([10, 10, 2, 20, 20, 4], 7, 0.03, wrap=True), TARGET)
    assert (iou, valid, peak) == (0.5, True, 3.0) and ratio == pytest.approx(0.5)
    # The box counts on its own field even when another field is broken (as the reward).
    assert score_answer(answer([10, 10, 2, 20, 20, 6], peak="four"), TARGET) == (1.0, False, None, None)
    for text in ("no answer", "<answer>{'bbox_3d': [1]}</answer>", answer([20, 20, 6, 10, 10, 2])):
        assert score_answer(text, TARGET) == (0.0, False, None, None)


def test_format_valid_is_the_rewards_json_format() -> None:
    texts = [
        answer([10, 10, 2, 20, 20, 6]),
        answer([10, 10, 2, 20, 20, 6], ratio=None),
        answer([1, 2, 3, 4, 5]),
        answer([10, 10, 2, 20, 20, 6], wrap=True),
        "<answer>[]</answer>",
        "",
    ]
    for text in texts:
        assert score_answer(text, TARGET)[1] == (brats_3d.score(text, TARGET)["json_format"] > 0), text


def test_metrics_by_hand_with_boundary_ious() -> None:
    metric = BratsDetectionMetrics()
    metric.update(
        [
            answer([10, 10, 2, 20, 20, 6]),  # IoU 1, errors 0 and 0
            answer([10, 10, 2, 20, 20, 4], 7, 0.03),  # IoU 0.5 exactly, errors 3 and 0.5
            answer([10, 10, 2, 20, 20, 4.8], 2, 0.01),  # IoU 280 / 400 = 0.7 (up to float), errors 2 and 0.5
        ],
        [TARGET] * 3,
    )
    metric.update(
        [
            answer([10, 10, 2, 20, 20, 3.2], peak="x"),  # IoU 120 / 400 = 0.3, invalid
            "I see no tumour",  # unparsable: IoU 0
            answer([20, 20, 6, 10, 10, 2]),  # inverted box: IoU 0, invalid
        ],
        [TARGET] * 3,
    )
    scores = metric.compute()
    assert set(scores) == {
        "iou_3d",
        "hit_at_0.3",
        "hit_at_0.5",
        "hit_at_0.7",
        "peak_slice_mae",
        "tumor_ratio_rel_error",
        "format_valid",
    }
    assert scores["iou_3d"] == pytest.approx((1 + 0.5 + 0.7 + 0.3) / 6)
    assert scores["hit_at_0.3"] == pytest.approx(4 / 6)
    assert scores["hit_at_0.5"] == pytest.approx(3 / 6)
    assert scores["hit_at_0.7"] == pytest.approx(2 / 6)
    assert scores["format_valid"] == pytest.approx(3 / 6)
    assert scores["peak_slice_mae"] == pytest.approx((0 + 3 + 2) / 3)  # over the 3 valid answers
    assert scores["tumor_ratio_rel_error"] == pytest.approx((0 + 0.5 + 0.5) / 3)
    assert BratsDetectionMetrics.group == "brats"


def test_reset_and_no_valid_answer_give_nan_errors() -> None:
    metric = BratsDetectionMetrics(thresholds=(0.5,))
    metric.update(["garbage"], [TARGET])
    scores = metric.compute()
    assert scores["iou_3d"] == 0.0 and scores["hit_at_0.5"] == 0.0 and scores["format_valid"] == 0.0
    assert math.isnan(scores["peak_slice_mae"]) and math.isnan(scores["tumor_ratio_rel_error"])
    metric.reset()
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update([answer([10, 10, 2, 20, 20, 6], 5, 0.02)], [TARGET])
    assert metric.compute() == {
        "iou_3d": 1.0,
        "hit_at_0.5": 1.0,
        "peak_slice_mae": 1.0,
        "tumor_ratio_rel_error": 0.0,
        "format_valid": 1.0,
    }


def test_bad_targets_raise_clearly() -> None:
    metric = BratsDetectionMetrics()
    with pytest.raises(ValueError, match="bbox_3d"):
        metric.update(["x"], [{**TARGET, "bbox_3d": [10, 10, 2, 10, 20, 6]}])
    with pytest.raises(ValueError, match="peak_slice"):
        metric.update(["x"], [{**TARGET, "peak_slice": None}])
    with pytest.raises(ValueError, match="tumor_ratio"):
        metric.update(["x"], [{**TARGET, "tumor_ratio": 0.0}])
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        metric.update(["x"], [TARGET, TARGET])
