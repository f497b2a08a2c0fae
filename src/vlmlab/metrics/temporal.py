"""Video temporal grounding metrics (seed 001): R1@m and mIoU, shared by validation and evaluate.py.

Conventions:

* The prediction is read exactly as the reward reads it (:func:`answer_iou`): the last
  ``<answer>S to E</answer>`` (:func:`vlmlab.data.vtg.parse_span` in the target's format), clipped to
  the clip, and its IoU with the true span is the reward's ``temporal_iou`` component at weight 1. The
  metric and the reward therefore agree by construction.
* R1@m (recall of the single answer at IoU m) counts a hit when ``IoU >= m`` (the usual grounding
  convention, e.g. Moment-DETR), with a tolerance of :data:`TOLERANCE` so that a span written in
  decimals that lands on m up to float rounding counts as reaching it.
* An answer without a valid span (no ``<answer>S to E</answer>``, not numbers, or ``S >= E``) has IoU
  0: it misses every threshold and lowers the mIoU; ``unparsable`` is the fraction of such answers.
* No sample scored: every value is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vlmlab.metrics.iou import TOLERANCE, IoUHitMetric
from vlmlab.rewards import temporal as temporal_reward
from vlmlab.rewards.numbers import finite_number

__all__ = ["TOLERANCE", "TemporalGroundingMetrics", "answer_iou", "check_target"]

# The reward's components as plain values in [0, 1]: temporal_iou is the IoU, format says "a valid span".
_UNIT_WEIGHTS = {"temporal_iou": 1.0, "segment_overlap": 0.0, "format": 1.0}


def check_target(target: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``target`` is a VTG target the reward can score (a metric must not
    silently score a broken target as a miss)."""
    if not isinstance(target, Mapping):
        raise ValueError(f"temporal grounding target must be a dict, got {type(target).__name__}")
    duration = finite_number(target.get("duration"))
    if duration is None or duration <= 0:
        raise ValueError(f"target duration must be a finite number > 0, got {target.get('duration')!r}")
    if temporal_reward.temporal_format(target) is None:
        raise ValueError(
            "target relative/num_bins/temporal_tokens do not form a valid TemporalFormat: "
            f"{ {k: target.get(k) for k in ('relative', 'num_bins', 'temporal_tokens')} }"
        )
    span = target.get("timestamp")
    ok = isinstance(span, Sequence) and not isinstance(span, str) and len(span) == 2
    start, end = (finite_number(span[0]), finite_number(span[1])) if ok else (None, None)
    if start is None or end is None or not 0 <= start < end <= duration:
        raise ValueError(
            f"target timestamp must be [s, e] with 0 <= s < e <= duration={duration}, got {span!r}"
        )


def answer_iou(completion: str, target: Mapping[str, Any]) -> tuple[float, bool]:
    """The IoU in [0, 1] of the answer's span with ``target["timestamp"]`` (the reward's ``temporal_iou``),
    and whether the answer held a valid span (the reward's ``format``). Never raises."""
    parts = temporal_reward.score(completion, target, weights=_UNIT_WEIGHTS)
    return parts["temporal_iou"], parts["format"] == 1.0


class TemporalGroundingMetrics(IoUHitMetric):
    """R1@m for each threshold m, mIoU, and the unparsable fraction over generated answers.

    Keys of :meth:`compute`: ``r1_at_{m}`` (``r1_at_0.3``...: fraction with IoU >= m), ``miou`` (mean IoU,
    0 for unparsable answers), ``unparsable`` (fraction without a valid span). Logged as
    ``{stage}/grounding/{key}``. States are sums (``dist_reduce_fx="sum"``), so ``compute`` is exact
    across DDP ranks.
    """

    group = "grounding"

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        super().__init__(thresholds)
        self.add_state("unparsed", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[str], targets: list[dict[str, Any]]) -> None:
        """predictions: generated texts; targets: their VTG targets (same length)."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        for target in targets:
            check_target(target)
        scored = [answer_iou(text, target) for text, target in zip(predictions, targets, strict=True)]
        self.add_ious([iou for iou, _ in scored])
        self.unparsed += sum(not valid for _, valid in scored)

    def compute(self) -> dict[str, float]:
        total = int(self.total)
        out = {f"r1_at_{m:g}": rate for m, rate in self.hit_rates().items()}
        out["miou"] = self.mean_iou()
        out["unparsable"] = int(self.unparsed) / total if total else math.nan
        return out
