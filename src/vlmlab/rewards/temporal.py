"""The grounding recipe's reward for video temporal grounding: temporal IoU, segment overlap, format.

The model answers ``<answer>S to E</answer>`` in the format of :func:`vlmlab.tasks.grounding.format_span`
(seconds, fractions of the clip, or temporal tokens ``<b>``); ``target`` is a
:class:`~vlmlab.tasks.grounding.GroundingTarget` dict ``{"timestamp": [s, e], "duration", "relative",
"num_bins", "temporal_tokens"}`` (the last three default to :class:`~vlmlab.tasks.grounding.TemporalFormat`'s
defaults when absent).

===================  ======  =================================================================
component            weight  rule (value with weight 1)
===================  ======  =================================================================
``temporal_iou``     1.0     IoU of the predicted and the true span
``segment_overlap``  0.5     :func:`segment_overlap` in ``overlap_mode`` ("recall" in the recipe:
                             the overlap over the true span's length)
``format``           0.5     the last ``<answer>S to E</answer>`` parses (:func:`vlmlab.tasks.grounding.parse_span`)
                             to finite numbers with ``S < E``
===================  ======  =================================================================

Definitions:

* The prediction is the last ``<answer>S to E</answer>`` of the completion (:func:`~vlmlab.tasks.grounding.parse_span`); it is
  clipped to ``[0, duration]`` before IoU and overlap (a span that needed clipping still counts as
  formatted: the format says nothing about the clip). A reversed or empty span (``S >= E``) scores
  0 on all three components.
* ``format`` weighs 0.5: half the IoU's weight, so that once answers are well formed (a constant
  across GRPO's group, which then carries no advantage) the grounding terms dominate, while a
  badly formed answer still costs as much as the recipe's overlap term.
* Malformed targets score 0 and never raise: a non-finite or non-positive ``duration``, or a
  ``relative`` / ``temporal_tokens`` that is not a bool, or a ``num_bins`` that is not an int
  TemporalFormat accepts, gives 0 on all components (the answer cannot be read without them); a
  ``timestamp`` that is not ``[s, e]`` finite with ``s < e`` inside the clip after clipping gives 0 on
  ``temporal_iou`` and ``segment_overlap``.

Weights: ``weights`` overrides some of :data:`DEFAULT_WEIGHTS`; each component is its value in
[0, 1] times its weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from vlmlab.rewards.compose import merge_weights
from vlmlab.tasks.grounding import as_span, overlap, read_spans, span_iou

__all__ = ["DEFAULT_WEIGHTS", "MAX_TOTAL", "OVERLAP_MODES", "score", "segment_overlap"]

OverlapMode = Literal["recall", "precision", "f1"]
OVERLAP_MODES: tuple[str, ...] = ("recall", "precision", "f1")
DEFAULT_WEIGHTS: dict[str, float] = {"temporal_iou": 1.0, "segment_overlap": 0.5, "format": 0.5}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())  # 2.0


def segment_overlap(pred: Sequence[float], gt: Sequence[float], mode: OverlapMode = "recall") -> float:
    """How much two spans overlap, in [0, 1]; an invalid span gives 0.

    recall: intersection / ground-truth length (the grounding recipe's); precision: intersection / predicted
    length; f1: their harmonic mean (0 when both are 0). Raises ValueError for another ``mode``.
    """
    if mode not in OVERLAP_MODES:
        raise ValueError(f"segment_overlap mode must be one of {OVERLAP_MODES}, got {mode!r}")
    a, b = as_span(pred), as_span(gt)
    if a is None or b is None:
        return 0.0
    inter = overlap(a, b)
    recall = inter / (b[1] - b[0])
    precision = inter / (a[1] - a[0])
    if mode == "recall":
        value = recall
    elif mode == "precision":
        value = precision
    else:
        value = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def score(
    completion: str,
    target: Mapping[str, Any],
    weights: Mapping[str, float] | None = None,
    overlap_mode: OverlapMode = "recall",
) -> dict[str, float]:
    """Every component of the temporal-grounding reward (weighted) and ``"total"`` for one completion.

    completion: the model's text. target: a VTG target (a non-dict counts as empty). weights:
    overrides of :data:`DEFAULT_WEIGHTS`. overlap_mode: how ``segment_overlap`` is measured.
    Never raises on any completion or target; raises ValueError for invalid ``weights`` or mode.
    """
    effective = merge_weights(DEFAULT_WEIGHTS, weights)
    if overlap_mode not in OVERLAP_MODES:
        raise ValueError(f"overlap_mode must be one of {OVERLAP_MODES}, got {overlap_mode!r}")
    values = dict.fromkeys(DEFAULT_WEIGHTS, 0.0)
    pred, truth = read_spans(completion, target)
    if pred is not None:
        values["format"] = 1.0
        if truth is not None:
            values["temporal_iou"] = span_iou(pred, truth)
            values["segment_overlap"] = segment_overlap(pred, truth, overlap_mode)
    out = {name: values[name] * effective[name] for name in DEFAULT_WEIGHTS}
    out["total"] = sum(out.values())
    return out
