"""Video temporal grounding metrics: R1@m and mIoU, shared by validation and evaluate.py.

Conventions:

* The prediction is read exactly as the reward reads it (:func:`vlmlab.tasks.grounding.answer_iou`):
  the last ``<answer>S to E</answer>`` in the target's format, clipped to the clip, and its IoU with the
  true span is the reward's ``temporal_iou`` component at weight 1. The metric and the reward therefore
  agree by construction.
* R1@m (recall of the single answer at IoU m) counts a hit when ``IoU >= m`` (the usual grounding
  convention, e.g. Moment-DETR), with a tolerance of :data:`TOLERANCE` so that a span written in
  decimals that lands on m up to float rounding counts as reaching it.
* An answer without a valid span (no ``<answer>S to E</answer>``, not numbers, or ``S >= E``) has IoU
  0: it misses every threshold and lowers the mIoU; ``unparsable`` is the fraction of such answers.
* No sample scored: every value is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from vlmlab.metrics.constant import ScoresConstantAnswer
from vlmlab.metrics.iou import TOLERANCE, IoUHitMetric
from vlmlab.tasks.grounding import GroundingTarget, answer_iou, constant_answer

__all__ = ["TOLERANCE", "TemporalGroundingMetrics"]


class TemporalGroundingMetrics(ScoresConstantAnswer, IoUHitMetric):
    """R1@m for each threshold m, mIoU, and the unparsable fraction over generated answers.

    Keys of :meth:`compute`: ``r1_at_{m}`` (``r1_at_0.3``...: fraction with IoU >= m), ``miou`` (mean IoU,
    0 for unparsable answers), ``unparsable`` (fraction without a valid span). Logged as
    ``{stage}/grounding/{key}``. States are sums (``dist_reduce_fx="sum"``), so ``compute`` is exact
    across DDP ranks.
    """

    constant_answer = staticmethod(constant_answer)  # the task's best input-independent answer

    group = "grounding"

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        super().__init__(thresholds)
        self.add_state("unparsed", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[str], targets: list[dict[str, Any]]) -> None:
        """predictions: generated texts; targets: their VTG targets (same length)."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        for target in targets:
            GroundingTarget.check(target)
        scored = [answer_iou(text, target) for text, target in zip(predictions, targets, strict=True)]
        self.add_ious([iou for iou, _ in scored])
        self.unparsed += sum(not valid for _, valid in scored)

    def compute(self) -> dict[str, float]:
        total = int(self.total)
        out = {f"r1_at_{m:g}": rate for m, rate in self.hit_rates().items()}
        out["miou"] = self.mean_iou()
        out["unparsable"] = int(self.unparsed) / total if total else math.nan
        return out
