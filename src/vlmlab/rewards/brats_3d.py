"""The BraTS recipe's reward for 3D brain-tumour detection (max 8.5).

The model answers ``<think>This video shows ...</think><answer>{json}</answer>`` with the JSON
object ``{"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": p, "tumor_ratio": r}`` in the
coordinates of the frames it sees; the answer is read by :mod:`vlmlab.tasks.brats_detection` (as the
metrics read it); ``target`` is a :class:`~vlmlab.tasks.brats_detection.BratsTarget` dict
(``bbox_3d`` continuous frame-edge coordinates, ``peak_slice`` a frame index, ``tumor_ratio`` in (0, 1]).

=================  ======  ====================================================================
component          weight  rule (points with the default weights)
=================  ======  ====================================================================
``think_format``   0.5     :func:`~vlmlab.tasks.brats_detection.has_think_format` (Seg-Zero's strict
                           format; tags are case-sensitive)
``video_keyword``  0.5     the first ``<think>...</think>``'s text, stripped, starts with "This
                           video shows" (case-insensitive, as the BraTS recipe)
``json_format``    1.0     the answer is valid JSON with the required fields (see below)
``iou_3d``         3.0     3D IoU > 0.7: 3.0; > 0.5: 2.0; > 0.3: 1.0; else 0 (strict)
``peak_slice``     1.5     abs error <= 3: 1.5; <= 5: 1.05; <= 10: 0.45; else 0 (inclusive)
``tumor_ratio``    1.5     relative error ``|pred - true| / true`` <= 10%: 1.5; <= 20%: 1.05;
                           <= 30%: 0.45; else 0 (inclusive)
``non_repetition`` 0.5     no repeated sentence or looping word n-gram
                           (:func:`vlmlab.rewards.repetition.has_repetition`)
=================  ======  ====================================================================

Definitions (choices the recipe left open):

* The *answer* is the text of the first ``<answer>...</answer>`` (the recipe's ``re.search``), with no
  fallback to the whole completion: a missing answer scores 0 on ``json_format`` and the three
  geometric parts. It must be strict JSON (``json.loads``; no single quotes, no code fences) and
  an object, or a list whose only item is an object (the recipe's own examples wrap it in ``[...]``).
* ``json_format`` needs all of: ``bbox_3d`` a list of 6 finite numbers (bools are not numbers)
  with ``x1 <= x2, y1 <= y2, z1 <= z2``; ``peak_slice`` and ``tumor_ratio`` finite numbers.
  Extra keys are allowed. ``NaN`` / ``Infinity`` / overflowing numbers are invalid.
* The geometric parts are judged field by field (as the recipe does): a valid ``bbox_3d`` earns
  ``iou_3d`` even if ``peak_slice`` is malformed, and so on.
* Boxes are continuous ``[x1, y1, z1, x2, y2, z2]``: volume ``(x2-x1)(y2-y1)(z2-z1)``; a degenerate
  or inverted box (either one) has IoU 0.
* A true ``tumor_ratio`` of 0 (not produced by the BraTS loader, which rejects tumour-free
  cases) earns the full ``tumor_ratio`` weight only for a predicted 0, as in the BraTS recipe.
* Thresholds are compared with a tolerance of :data:`TOLERANCE` (1e-9), so that a boundary written
  in decimals lands on the tier a person expects despite binary floats: 0.55 against 0.5 is a
  10% error (1.5 points), IoU 0.7 + 1e-12 is still "not > 0.7".
* Malformed target values (missing keys, wrong types, non-finite numbers, a degenerate target
  box, a negative true ratio) score 0 on the parts that need them; nothing raises.

Weights: ``weights`` overrides some of :data:`DEFAULT_WEIGHTS`; each component's points are scaled
by ``weight / default weight``, so the tiers keep their ratios (``iou_3d: 6.0`` gives 6, 4, 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from vlmlab.rewards.compose import merge_weights
from vlmlab.rewards.repetition import has_repetition
from vlmlab.tasks.brats_detection import (
    VIDEO_KEYWORD,
    box_iou_3d,
    first_thinking,
    has_think_format,
    parse_answer,
    valid_answer,
)
from vlmlab.tasks.numbers import finite_number

__all__ = [
    "DEFAULT_WEIGHTS",
    "IOU_TIERS",
    "MAX_TOTAL",
    "PEAK_SLICE_TIERS",
    "TOLERANCE",
    "TUMOR_RATIO_TIERS",
    "score",
]

DEFAULT_WEIGHTS: dict[str, float] = {
    "think_format": 0.5,
    "video_keyword": 0.5,
    "json_format": 1.0,
    "iou_3d": 3.0,
    "peak_slice": 1.5,
    "tumor_ratio": 1.5,
    "non_repetition": 0.5,
}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())  # 8.5

# (threshold, points with the default weight), best tier first.
IOU_TIERS: tuple[tuple[float, float], ...] = ((0.7, 3.0), (0.5, 2.0), (0.3, 1.0))  # IoU > threshold
PEAK_SLICE_TIERS: tuple[tuple[float, float], ...] = ((3.0, 1.5), (5.0, 1.05), (10.0, 0.45))  # error <=
TUMOR_RATIO_TIERS: tuple[tuple[float, float], ...] = ((0.1, 1.5), (0.2, 1.05), (0.3, 0.45))  # rel. error <=
TOLERANCE = 1e-9


def _tier(value: float, tiers: Sequence[tuple[float, float]], strict_above: bool) -> float:
    """Points of the first tier ``value`` reaches: ``value > t`` (strict_above) or ``value <= t``."""
    for threshold, points in tiers:
        reached = value > threshold + TOLERANCE if strict_above else value <= threshold + TOLERANCE
        if reached:
            return points
    return 0.0


def _geometric_points(answer: Mapping[str, Any] | None, target: Mapping[str, Any]) -> dict[str, float]:
    """Points (default weights) of ``iou_3d``, ``peak_slice``, ``tumor_ratio``, each from its own field."""
    points = {"iou_3d": 0.0, "peak_slice": 0.0, "tumor_ratio": 0.0}
    if answer is None:
        return points
    # box_iou_3d is 0 for anything that is not two valid boxes.
    points["iou_3d"] = _tier(
        box_iou_3d(answer.get("bbox_3d"), target.get("bbox_3d")), IOU_TIERS, strict_above=True
    )
    pred_peak, true_peak = finite_number(answer.get("peak_slice")), finite_number(target.get("peak_slice"))
    if pred_peak is not None and true_peak is not None:
        error = abs(pred_peak - true_peak)
        if math.isfinite(error):
            points["peak_slice"] = _tier(error, PEAK_SLICE_TIERS, strict_above=False)
    pred_ratio, true_ratio = (
        finite_number(answer.get("tumor_ratio")),
        finite_number(target.get("tumor_ratio")),
    )
    if pred_ratio is not None and true_ratio is not None and true_ratio >= 0:
        if true_ratio == 0:
            points["tumor_ratio"] = TUMOR_RATIO_TIERS[0][1] if pred_ratio == 0 else 0.0
        else:
            error = abs(pred_ratio - true_ratio) / true_ratio
            if math.isfinite(error):
                points["tumor_ratio"] = _tier(error, TUMOR_RATIO_TIERS, strict_above=False)
    return points


def score(
    completion: str, target: Mapping[str, Any], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Every component of the BraTS recipe's reward (weighted) and ``"total"`` for one completion.

    completion: the model's text. target: ``{"bbox_3d", "peak_slice", "tumor_ratio"}`` (other keys
    ignored; a non-dict counts as empty). weights: overrides of :data:`DEFAULT_WEIGHTS`.
    Never raises on any completion or target; raises ValueError only for invalid ``weights``.
    """
    effective = merge_weights(DEFAULT_WEIGHTS, weights)
    text = completion if isinstance(completion, str) else ""
    target = target if isinstance(target, Mapping) else {}
    think = first_thinking(text)
    answer = parse_answer(text)
    points = {
        "think_format": DEFAULT_WEIGHTS["think_format"] if has_think_format(text) else 0.0,
        "video_keyword": (
            DEFAULT_WEIGHTS["video_keyword"]
            if think is not None and think.strip().lower().startswith(VIDEO_KEYWORD.lower())
            else 0.0
        ),
        "json_format": DEFAULT_WEIGHTS["json_format"] if answer is not None and valid_answer(answer) else 0.0,
        **_geometric_points(answer, target),
        "non_repetition": 0.0 if has_repetition(text) else DEFAULT_WEIGHTS["non_repetition"],
    }
    # points * (weight / default): the default weights give the table's points exactly (factor 1.0).
    out = {name: points[name] * (effective[name] / DEFAULT_WEIGHTS[name]) for name in DEFAULT_WEIGHTS}
    out["total"] = sum(out.values())
    return out
