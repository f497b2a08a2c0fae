"""The seed-001 reward for video temporal grounding: temporal IoU, segment overlap, format.

The model answers ``<answer>S to E</answer>`` in the format of :func:`vlmlab.data.vtg.format_span`
(seconds, fractions of the clip, or temporal tokens ``<b>``); ``target`` is a VTG sample's target
``{"timestamp": [s, e], "duration", "relative", "num_bins", "temporal_tokens"}`` (the last three
default to :class:`vlmlab.data.vtg.TemporalFormat`'s defaults when absent).

===================  ======  =================================================================
component            weight  rule (value with weight 1)
===================  ======  =================================================================
``temporal_iou``     1.0     IoU of the predicted and the true span (seed 001)
``segment_overlap``  0.5     :func:`segment_overlap` in ``overlap_mode`` ("recall" in seed 001:
                             the overlap over the true span's length)
``format``           0.5     the last ``<answer>S to E</answer>`` parses (:func:`vlmlab.data.vtg.parse_span`)
                             to finite numbers with ``S < E``
===================  ======  =================================================================

Definitions:

* The prediction is the last ``<answer>S to E</answer>`` of the completion (``parse_span``); it is
  clipped to ``[0, duration]`` before IoU and overlap (a span that needed clipping still counts as
  formatted: the format says nothing about the clip). A reversed or empty span (``S >= E``) scores
  0 on all three components.
* ``format`` weighs 0.5: half the IoU's weight, so that once answers are well formed (a constant
  across GRPO's group, which then carries no advantage) the grounding terms dominate, while a
  badly formed answer still costs as much as the seed's overlap term.
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

from vlmlab.data.vtg import TemporalFormat, parse_span
from vlmlab.rewards.compose import merge_weights
from vlmlab.rewards.numbers import finite_number

__all__ = [
    "DEFAULT_WEIGHTS",
    "MAX_TOTAL",
    "OVERLAP_MODES",
    "predicted_span",
    "score",
    "segment_overlap",
    "temporal_format",
    "temporal_iou",
]

OverlapMode = Literal["recall", "precision", "f1"]
OVERLAP_MODES: tuple[str, ...] = ("recall", "precision", "f1")
DEFAULT_WEIGHTS: dict[str, float] = {"temporal_iou": 1.0, "segment_overlap": 0.5, "format": 0.5}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())  # 2.0

Span = tuple[float, float]


def _span(value: Any) -> Span | None:
    """``value`` as a finite ``(start, end)`` with ``start < end``, or None."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return None
    start, end = finite_number(value[0]), finite_number(value[1])
    if start is None or end is None or not start < end:
        return None
    return start, end


def _intersection(a: Span, b: Span) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def temporal_iou(pred: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two spans ``(start, end)`` in [0, 1]; an invalid span (non-finite, ``end <= start``) gives 0."""
    a, b = _span(pred), _span(gt)
    if a is None or b is None:
        return 0.0
    inter = _intersection(a, b)
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    iou = inter / union if union > 0 else 0.0
    return min(1.0, max(0.0, iou)) if math.isfinite(iou) else 0.0


def segment_overlap(pred: Sequence[float], gt: Sequence[float], mode: OverlapMode = "recall") -> float:
    """How much two spans overlap, in [0, 1]; an invalid span gives 0.

    recall: intersection / ground-truth length (seed 001); precision: intersection / predicted
    length; f1: their harmonic mean (0 when both are 0). Raises ValueError for another ``mode``.
    """
    if mode not in OVERLAP_MODES:
        raise ValueError(f"segment_overlap mode must be one of {OVERLAP_MODES}, got {mode!r}")
    a, b = _span(pred), _span(gt)
    if a is None or b is None:
        return 0.0
    inter = _intersection(a, b)
    recall = inter / (b[1] - b[0])
    precision = inter / (a[1] - a[0])
    if mode == "recall":
        value = recall
    elif mode == "precision":
        value = precision
    else:
        value = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def temporal_format(target: Mapping[str, Any]) -> TemporalFormat | None:
    """The answer format a target declares (``relative``, ``num_bins``, ``temporal_tokens``), or None if malformed."""
    relative = target.get("relative", TemporalFormat.use_relative_timestamps)
    tokens = target.get("temporal_tokens", TemporalFormat.use_temporal_tokens)
    num_bins = target.get("num_bins", TemporalFormat.num_bins)
    if not isinstance(relative, bool) or not isinstance(tokens, bool):
        return None
    if isinstance(num_bins, bool) or not isinstance(num_bins, int):
        return None
    try:
        return TemporalFormat(use_relative_timestamps=relative, num_bins=num_bins, use_temporal_tokens=tokens)
    except ValueError:
        return None


def predicted_span(completion: str, duration: float, temporal: TemporalFormat) -> Span | None:
    """The answer's span in seconds, unclipped, if it is finite with ``start < end``; else None."""
    span = parse_span(completion, duration, temporal)
    return _span(span) if span is not None else None


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
    text = completion if isinstance(completion, str) else ""
    target = target if isinstance(target, Mapping) else {}
    duration = finite_number(target.get("duration"))
    temporal = temporal_format(target)
    if duration is not None and duration > 0 and temporal is not None:
        pred = predicted_span(text, duration, temporal)
        if pred is not None:
            values["format"] = 1.0
            clip = (0.0, duration)
            clipped = (min(max(pred[0], 0.0), duration), min(max(pred[1], 0.0), duration))
            truth = _span(target.get("timestamp"))
            if truth is not None:
                truth = _span((min(max(truth[0], 0.0), duration), min(max(truth[1], 0.0), duration)))
            if truth is not None and _intersection(pred, clip) > 0:
                values["temporal_iou"] = temporal_iou(clipped, truth)
                values["segment_overlap"] = segment_overlap(clipped, truth, overlap_mode)
    out = {name: values[name] * effective[name] for name in DEFAULT_WEIGHTS}
    out["total"] = sum(out.values())
    return out
