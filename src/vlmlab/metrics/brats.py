"""3D brain-tumour detection metrics, shared by validation and evaluate.py.

Answers are read exactly as the reward reads them (:mod:`vlmlab.tasks.brats_detection`): the JSON object of
the first ``<answer>...</answer>`` (:func:`~vlmlab.tasks.brats_detection.parse_answer`), boxes compared with
:func:`~vlmlab.tasks.brats_detection.box_iou_3d`, all in the frame coordinates of the target.

Conventions:

* ``format_valid``: the fraction of answers that earn the reward's ``json_format`` (valid JSON with an
  ordered 6-number ``bbox_3d`` and numeric ``peak_slice`` and ``tumor_ratio``).
* ``iou_3d`` (mean) and ``hit_at_{m}`` are over **all** answers: an answer without a readable box
  has IoU 0. As the reward, the box is judged on its own field: a valid ``bbox_3d`` in an answer whose
  other fields are broken still counts. A hit is ``IoU >= m`` (detection convention, with a tolerance
  of :data:`TOLERANCE`); note that the reward's tiers are strict (``IoU > m``, the BraTS recipe).
* ``peak_slice_mae`` (frames) and ``tumor_ratio_rel_error`` (``|pred - true| / true``) are over the
  **format-valid** answers only, so ``format_valid`` is exactly their coverage. No penalty value is
  substituted for a missing answer: there is no natural worst error (a penalty such as the frame count
  would depend on the video length and mix a format failure into a geometric error), and format
  failures are already charged to ``iou_3d`` / ``hit_at_*`` and reported by ``format_valid``. Read the
  errors together with ``format_valid``.
* A mean over no answers is NaN (no sample, or no valid answer for the two errors).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vlmlab.metrics.constant import ScoresConstantAnswer
from vlmlab.metrics.iou import TOLERANCE, IoUHitMetric
from vlmlab.tasks.brats_detection import (
    BratsTarget,
    box_iou_3d,
    constant_answer,
    parse_answer,
    valid_answer,
)

__all__ = ["TOLERANCE", "AnswerScore", "BratsDetectionMetrics", "score_answer"]


AnswerScore = tuple[float, bool, float | None, float | None]


def score_answer(completion: str, target: Mapping[str, Any]) -> AnswerScore:
    """``(iou, format_valid, peak_slice_error, tumor_ratio_rel_error)`` of one answer; the two errors are
    None unless the answer is format-valid. ``target`` must pass :meth:`BratsTarget.check`. Never raises on
    any completion."""
    answer = parse_answer(completion) if isinstance(completion, str) else None
    if answer is None:
        return 0.0, False, None, None
    iou = box_iou_3d(answer.get("bbox_3d"), target["bbox_3d"])
    if not valid_answer(answer):
        return iou, False, None, None
    peak_error = abs(float(answer["peak_slice"]) - float(target["peak_slice"]))
    # A valid but astronomically large number may overflow to inf here: the mean is then inf, truthfully.
    ratio_error = abs(float(answer["tumor_ratio"]) - float(target["tumor_ratio"])) / float(
        target["tumor_ratio"]
    )
    return iou, True, peak_error, ratio_error


class BratsDetectionMetrics(ScoresConstantAnswer, IoUHitMetric):
    """Mean 3D IoU, hit rates, peak-slice MAE, tumour-ratio relative error and format validity.

    Keys of :meth:`compute`: ``iou_3d``, ``hit_at_{m}`` for each threshold (``hit_at_0.3``...),
    ``peak_slice_mae``, ``tumor_ratio_rel_error``, ``format_valid``; logged as ``{stage}/brats/{key}``.
    States are sums (``dist_reduce_fx="sum"``), so ``compute`` is exact across DDP ranks.
    """

    constant_answer = staticmethod(constant_answer)  # the task's best input-independent answer

    group = "brats"

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        super().__init__(thresholds)
        self.add_state("peak_error_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ratio_error_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("valid", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[str], targets: list[dict[str, Any]]) -> None:
        """predictions: generated texts; targets: their BraTS targets (frame coordinates, same length)."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        for target in targets:
            BratsTarget.check(target)
        scored = [score_answer(text, target) for text, target in zip(predictions, targets, strict=True)]
        self.add_ious([s[0] for s in scored])
        valid = [s for s in scored if s[1]]
        self.peak_error_sum += sum(s[2] for s in valid)
        self.ratio_error_sum += sum(s[3] for s in valid)
        self.valid += len(valid)

    def compute(self) -> dict[str, float]:
        total, valid = int(self.total), int(self.valid)
        out = {"iou_3d": self.mean_iou()}
        out.update({f"hit_at_{m:g}": rate for m, rate in self.hit_rates().items()})
        out["peak_slice_mae"] = float(self.peak_error_sum) / valid if valid else math.nan
        out["tumor_ratio_rel_error"] = float(self.ratio_error_sum) / valid if valid else math.nan
        out["format_valid"] = valid / total if total else math.nan
        return out
