"""The seed-003 reward for 3D brain-tumour detection (DESIGN.md "Rewards", max 8.5).

The model answers ``<think>This video shows ...</think><answer>{json}</answer>`` with the JSON
object ``{"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": p, "tumor_ratio": r}`` in the
coordinates of the frames it sees (:func:`vlmlab.data.brats.format_answer`); ``target`` is a BraTS
sample's target with the same keys (``bbox_3d`` continuous frame-edge coordinates, ``peak_slice``
a frame index, ``tumor_ratio`` in (0, 1]).

=================  ======  ====================================================================
component          weight  rule (points with the default weights)
=================  ======  ====================================================================
``think_format``   0.5     ``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text.strip(),
                           re.DOTALL)`` (Seg-Zero's strict format; tags are case-sensitive)
``video_keyword``  0.5     the first ``<think>...</think>``'s text, stripped, starts with "This
                           video shows" (case-insensitive, as seed 003)
``json_format``    1.0     the answer is valid JSON with the required fields (see below)
``iou_3d``         3.0     3D IoU > 0.7: 3.0; > 0.5: 2.0; > 0.3: 1.0; else 0 (strict)
``peak_slice``     1.5     abs error <= 3: 1.5; <= 5: 1.05; <= 10: 0.45; else 0 (inclusive)
``tumor_ratio``    1.5     relative error ``|pred - true| / true`` <= 10%: 1.5; <= 20%: 1.05;
                           <= 30%: 0.45; else 0 (inclusive)
``non_repetition`` 0.5     no sentence of the completion repeats (see :func:`has_repetition`)
=================  ======  ====================================================================

Definitions (choices the seed left open):

* The *answer* is the text of the first ``<answer>...</answer>`` (the seed's ``re.search``), with no
  fallback to the whole completion: a missing answer scores 0 on ``json_format`` and the three
  geometric parts. It must be strict JSON (``json.loads``; no single quotes, no code fences) and
  an object, or a list whose only item is an object (the seed's own examples wrap it in ``[...]``).
* ``json_format`` needs all of: ``bbox_3d`` a list of 6 finite numbers (bools are not numbers)
  with ``x1 <= x2, y1 <= y2, z1 <= z2``; ``peak_slice`` and ``tumor_ratio`` finite numbers.
  Extra keys are allowed. ``NaN`` / ``Infinity`` / overflowing numbers are invalid.
* The geometric parts are judged field by field (as the seed does): a valid ``bbox_3d`` earns
  ``iou_3d`` even if ``peak_slice`` is malformed, and so on.
* Boxes are continuous ``[x1, y1, z1, x2, y2, z2]``: volume ``(x2-x1)(y2-y1)(z2-z1)``; a degenerate
  or inverted box (either one) has IoU 0.
* A true ``tumor_ratio`` of 0 (not produced by the BraTS loader, which rejects tumour-free
  cases) earns the full ``tumor_ratio`` weight only for a predicted 0, as in seed 003.
* Thresholds are compared with a tolerance of :data:`TOLERANCE` (1e-9), so that a boundary written
  in decimals lands on the tier a person expects despite binary floats: 0.55 against 0.5 is a
  10% error (1.5 points), IoU 0.7 + 1e-12 is still "not > 0.7".
* Malformed target values (missing keys, wrong types, non-finite numbers, a degenerate target
  box, a negative true ratio) score 0 on the parts that need them; nothing raises.

Weights: ``weights`` overrides some of :data:`DEFAULT_WEIGHTS`; each component's points are scaled
by ``weight / default weight``, so the tiers keep their ratios (``iou_3d: 6.0`` gives 6, 4, 2).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from vlmlab.rewards.compose import merge_weights
from vlmlab.rewards.numbers import finite_number

__all__ = [
    "DEFAULT_WEIGHTS",
    "IOU_TIERS",
    "MAX_TOTAL",
    "PEAK_SLICE_TIERS",
    "TOLERANCE",
    "TUMOR_RATIO_TIERS",
    "box_iou_3d",
    "has_repetition",
    "parse_answer",
    "score",
    "valid_answer",
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
VIDEO_KEYWORD = "this video shows"
REQUIRED_FIELDS = ("bbox_3d", "peak_slice", "tumor_ratio")

_THINK_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Sentence boundaries: . ! ? followed by whitespace (so "1.5" stays whole), line breaks, and the tags.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+|</?(?:think|answer)>")
_WORD = re.compile(r"\w")


def _box(value: Any) -> list[float] | None:
    """A list/tuple of 6 finite numbers as floats, or None (order not checked)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 6:
        return None
    numbers = [finite_number(v) for v in value]
    return None if any(v is None for v in numbers) else numbers  # type: ignore[return-value]


def box_iou_3d(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two continuous boxes ``[x1, y1, z1, x2, y2, z2]``, in [0, 1].

    A degenerate or inverted box (any ``x2 <= x1``...) or a non-finite result gives 0.
    """
    box_a, box_b = _box(a), _box(b)
    if box_a is None or box_b is None:
        return 0.0
    extents_a = [box_a[k + 3] - box_a[k] for k in range(3)]
    extents_b = [box_b[k + 3] - box_b[k] for k in range(3)]
    if min(extents_a) <= 0 or min(extents_b) <= 0:
        return 0.0
    inter = 1.0
    for k in range(3):
        inter *= max(0.0, min(box_a[k + 3], box_b[k + 3]) - max(box_a[k], box_b[k]))
    volume_a = extents_a[0] * extents_a[1] * extents_a[2]
    volume_b = extents_b[0] * extents_b[1] * extents_b[2]
    union = volume_a + volume_b - inter
    iou = inter / union if union > 0 else 0.0
    # Huge coordinates overflow to inf / nan: no meaningful overlap, no reward.
    return min(1.0, max(0.0, iou)) if math.isfinite(iou) else 0.0


def parse_answer(completion: str) -> dict[str, Any] | None:
    """The JSON object in the first ``<answer>...</answer>``, or None (no answer, not JSON, not an object).

    A list holding exactly one object is unwrapped (seed 003 answers ``[{...}]``). Never raises.
    """
    match = _ANSWER.search(completion)
    if match is None:
        return None
    try:
        data = json.loads(match.group(1).strip())
    except (ValueError, RecursionError):  # JSONDecodeError, int digit limits, deep nesting
        return None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    return data if isinstance(data, dict) else None


def valid_answer(answer: Mapping[str, Any]) -> bool:
    """The required fields with the right types: an ordered box of 6 numbers, two numbers."""
    box = _box(answer.get("bbox_3d"))
    if box is None or any(box[k] > box[k + 3] for k in range(3)):
        return False
    return (
        finite_number(answer.get("peak_slice")) is not None
        and finite_number(answer.get("tumor_ratio")) is not None
    )


def has_repetition(text: str) -> bool:
    """Whether any sentence of ``text`` occurs twice (Seg-Zero's non-repetition check, stricter).

    Sentences end at ``.``/``!``/``?`` followed by whitespace, at line breaks and at the
    ``<think>``/``<answer>`` tags; they are compared lower-cased, with whitespace collapsed and
    final ``.!?`` removed; pieces without a letter or digit (``"-"``, ``"{"``) are ignored.
    Seg-Zero splits on every ``.`` (so ``1.5`` splits) and tolerates one repeat; here any repeat
    counts, as degenerate loops repeat a sentence many times while a good answer never does.
    """
    seen: set[str] = set()
    for piece in _SENTENCE_BREAK.split(text):
        sentence = " ".join(piece.split()).lower().rstrip(".!?").strip()
        if not _WORD.search(sentence):
            continue
        if sentence in seen:
            return True
        seen.add(sentence)
    return False


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
    pred_box, true_box = _box(answer.get("bbox_3d")), _box(target.get("bbox_3d"))
    if pred_box is not None and true_box is not None:
        points["iou_3d"] = _tier(box_iou_3d(pred_box, true_box), IOU_TIERS, strict_above=True)
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
    """Every component of the seed-003 reward (weighted) and ``"total"`` for one completion.

    completion: the model's text. target: ``{"bbox_3d", "peak_slice", "tumor_ratio"}`` (other keys
    ignored; a non-dict counts as empty). weights: overrides of :data:`DEFAULT_WEIGHTS`.
    Never raises on any completion or target; raises ValueError only for invalid ``weights``.
    """
    effective = merge_weights(DEFAULT_WEIGHTS, weights)
    text = completion if isinstance(completion, str) else ""
    target = target if isinstance(target, Mapping) else {}
    think = _THINK.search(text)
    answer = parse_answer(text)
    points = {
        "think_format": DEFAULT_WEIGHTS["think_format"] if _THINK_FORMAT.fullmatch(text.strip()) else 0.0,
        "video_keyword": (
            DEFAULT_WEIGHTS["video_keyword"]
            if think is not None and think.group(1).strip().lower().startswith(VIDEO_KEYWORD)
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
