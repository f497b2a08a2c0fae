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
from torchmetrics import Metric

from vlmlab.rewards import temporal as temporal_reward
from vlmlab.rewards.numbers import finite_number

__all__ = ["TOLERANCE", "TemporalGroundingMetrics", "answer_iou", "check_target"]

TOLERANCE = 1e-9
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


class TemporalGroundingMetrics(Metric):
    """R1@m for each threshold m, mIoU, and the unparsable fraction over generated answers.

    Keys of :meth:`compute`: ``r1_at_{m}`` (``r1_at_0.3``...: fraction with IoU >= m), ``miou`` (mean IoU,
    0 for unparsable answers), ``unparsable`` (fraction without a valid span). Logged as
    ``{stage}/grounding/{key}``. States are sums (``dist_reduce_fx="sum"``), so ``compute`` is exact
    across DDP ranks.
    """

    group = "grounding"
    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        super().__init__()
        values = [float(m) for m in thresholds]
        if not values or any(not (0.0 < m <= 1.0) for m in values) or len(set(values)) != len(values):
            raise ValueError(f"thresholds must be distinct numbers in (0, 1], got {list(thresholds)!r}")
        self.thresholds = tuple(values)
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(len(values), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("unparsed", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: list[str], targets: list[dict[str, Any]]) -> None:
        """predictions: generated texts; targets: their VTG targets (same length)."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        for target in targets:
            check_target(target)
        scored = [answer_iou(text, target) for text, target in zip(predictions, targets, strict=True)]
        ious = torch.tensor([iou for iou, _ in scored], dtype=torch.float64, device=self.device)
        thresholds = torch.tensor(self.thresholds, dtype=torch.float64, device=self.device)
        self.iou_sum += ious.sum()
        self.hits += (ious[:, None] >= thresholds[None, :] - TOLERANCE).sum(0)
        self.unparsed += sum(not valid for _, valid in scored)
        self.total += len(scored)

    def compute(self) -> dict[str, float]:
        total = int(self.total)
        if total == 0:
            return {
                **{f"r1_at_{m:g}": math.nan for m in self.thresholds},
                "miou": math.nan,
                "unparsable": math.nan,
            }
        out = {
            f"r1_at_{m:g}": int(h) / total for m, h in zip(self.thresholds, self.hits.tolist(), strict=True)
        }
        out["miou"] = float(self.iou_sum) / total
        out["unparsable"] = int(self.unparsed) / total
        return out
