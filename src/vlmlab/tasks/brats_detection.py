"""3D brain-tumour detection: a box, the peak slice and the tumour's share of the brain, as JSON.

The model sees an MRI case as video frames and answers::

    <think>This video shows ...</think><answer>{"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": p, "tumor_ratio": r}</answer>

in the coordinates of the frames it sees: x, y pixel edges of the first modality's frame (or tile),
z frame indices of the first modality's run of frames, upper bounds exclusive
(:mod:`vlmlab.tasks.coords` maps them to voxels and back). The target (:class:`BratsTarget`) holds
both coordinate systems and the :class:`~vlmlab.tasks.coords.FrameGeometry` linking them.

Reading an answer (shared by the reward, the metrics and the pictures, all in linear time):

* the *answer* is the text of the first ``<answer>...</answer>``; it must be strict JSON, an object
  or a list whose only item is an object (:func:`parse_answer`);
* it is *valid* when ``bbox_3d`` is 6 finite numbers with ``x1 <= x2, y1 <= y2, z1 <= z2`` and
  ``peak_slice`` and ``tumor_ratio`` are finite numbers (:func:`valid_answer`);
* the *thinking format* is the whole text being ``<think>...</think>`` then ``<answer>...</answer>``
  (:func:`has_think_format`), and the thinking should start with :data:`VIDEO_KEYWORD`.

The baseline a model must beat is :func:`constant_answer`: the mean box, the median peak slice and the
mean ratio of the targets, one answer for every case.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vlmlab.tasks.coords import FrameGeometry
from vlmlab.tasks.numbers import finite_number

__all__ = [
    "PROMPT",
    "REQUIRED_FIELDS",
    "VIDEO_KEYWORD",
    "BratsTarget",
    "answer_box",
    "box_iou_3d",
    "constant_answer",
    "first_thinking",
    "format_answer",
    "format_prompt",
    "has_think_format",
    "layout_text",
    "parse_answer",
    "valid_answer",
]

VIDEO_KEYWORD = "This video shows"
REQUIRED_FIELDS = ("bbox_3d", "peak_slice", "tumor_ratio")

# Seg-Zero style: reasoning in <think>, JSON answer in <answer>; thinking must start "This video shows".
PROMPT = (
    "This video shows a brain MRI scan: {layout}. Find the brain tumour. Give its 3D bounding box "
    "[x1, y1, z1, x2, y2, z2] in the {pane} ({width}x{height} pixels): x, y are pixel edges and z are "
    "frame indices 0-{last_frame}, with x2, y2, z2 exclusive; the frame with the largest tumour area "
    "(peak_slice); and the tumour's fraction of the brain volume (tumor_ratio). Output the thinking "
    'process in <think> </think>, starting with "This video shows", and the final answer in '
    "<answer> </answer> tags as JSON, i.e. <think> thinking process here </think>"
    '<answer>{{"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": n, "tumor_ratio": r}}</answer>'
)


@dataclass(frozen=True)
class BratsTarget:
    """One case's ground truth.

    bbox_3d: continuous frame-edge box ``[x1, y1, z1, x2, y2, z2]`` (the model's coordinates).
    peak_slice: frame index (of the first modality) with the largest tumour area.
    tumor_ratio: tumour voxels / brain voxels, in (0, 1].
    bbox_3d_voxel / peak_slice_voxel: the same in voxel coordinates of the volume (NIfTI order).
    geometry: how the volume became the frames (:meth:`FrameGeometry.to_dict`).
    """

    bbox_3d: list[float]
    peak_slice: int
    tumor_ratio: float
    bbox_3d_voxel: list[float]
    peak_slice_voxel: int
    geometry: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def check(cls, target: Mapping[str, Any]) -> None:
        """Raise ValueError unless ``target`` has a non-degenerate ``bbox_3d``, a numeric ``peak_slice``
        and a ``tumor_ratio`` > 0 (what a metric needs to score answers against it)."""
        if not isinstance(target, Mapping):
            raise ValueError(f"BraTS target must be a dict, got {type(target).__name__}")
        box = _box(target.get("bbox_3d"))
        if box is None or any(box[k] >= box[k + 3] for k in range(3)):
            raise ValueError(
                f"target bbox_3d must be [x1, y1, z1, x2, y2, z2] with x1 < x2 ..., got {target.get('bbox_3d')!r}"
            )
        if finite_number(target.get("peak_slice")) is None:
            raise ValueError(f"target peak_slice must be a number, got {target.get('peak_slice')!r}")
        ratio = finite_number(target.get("tumor_ratio"))
        if ratio is None or ratio <= 0:
            raise ValueError(f"target tumor_ratio must be a number > 0, got {target.get('tumor_ratio')!r}")


def layout_text(names: Sequence[str], geometry: FrameGeometry) -> tuple[str, str]:
    """(how the modalities are laid out, where the box lives) in words for the prompt.

    names: the modalities' names, or empty when unknown (a video without ``modalities``).
    """
    count = geometry.num_modalities
    what = f"{count} MRI sequence{'s' if count > 1 else ''}"
    if names:
        what += f" ({', '.join(n.upper() for n in names)})"
    f = geometry.frames_per_modality
    if geometry.grid is None:
        if count == 1:
            return f"{what} in {f} frames", "frames"
        return f"{what} one after another, {f} frames each", f"first {f} frames"
    rows, cols = geometry.grid
    return f"{what} tiled {rows}x{cols} in each of {f} frames", "top-left tile"


def format_prompt(names: Sequence[str], geometry: FrameGeometry, template: str = PROMPT) -> str:
    """The user text: ``template`` filled with the layout, the pane, its size and the last frame index."""
    layout, pane = layout_text(names, geometry)
    height, width = geometry.tile_size
    return template.format(
        layout=layout, pane=pane, width=width, height=height, last_frame=geometry.frames_per_modality - 1
    )


def format_answer(box: Sequence[int], peak: int, ratio: float) -> str:
    """The SFT target: ``<think>This video shows ...</think><answer>{json}</answer>`` (frame coordinates)."""
    x1, y1, z1, x2, y2, z2 = (int(v) for v in box)
    # Short on purpose: the prompt already describes the layout, and every token of a rollout costs a
    # vocabulary-wide sampling step.
    think = f"{VIDEO_KEYWORD} the tumour in frames {z1} to {z2 - 1}, largest in frame {peak}."
    answer = json.dumps(
        {"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": int(peak), "tumor_ratio": round(ratio, 4)}
    )
    return f"<think>{think}</think><answer>{answer}</answer>"


def constant_answer(targets: Sequence[Mapping[str, Any]]) -> str:
    """The answer to give for every case: the targets' mean ``bbox_3d`` (frame coordinates, each edge
    rounded to the nearest pixel or frame, at least one wide), their median ``peak_slice`` (the lower
    middle one of an even count) and their mean ``tumor_ratio``, written by :func:`format_answer`.

    Every target must pass :meth:`BratsTarget.check`; raises ValueError without targets.
    """
    if not targets:
        raise ValueError("a constant BraTS answer needs at least one target")
    for target in targets:
        BratsTarget.check(target)
    boxes = [[float(v) for v in t["bbox_3d"]] for t in targets]  # [N, 6]
    mean = [sum(column) / len(boxes) for column in zip(*boxes, strict=True)]
    lower = [math.floor(v + 0.5) for v in mean[:3]]
    upper = [max(math.floor(v + 0.5), low + 1) for v, low in zip(mean[3:], lower, strict=True)]
    peak = statistics.median_low(float(t["peak_slice"]) for t in targets)
    ratio = sum(float(t["tumor_ratio"]) for t in targets) / len(targets)
    return format_answer([*lower, *upper], int(peak), ratio)


def _tagged(text: str, open_tag: str, close_tag: str) -> str | None:
    """The text between the first ``open_tag`` and the first ``close_tag`` after it, or None."""
    start = text.find(open_tag)
    if start < 0:
        return None
    end = text.find(close_tag, start + len(open_tag))
    return None if end < 0 else text[start + len(open_tag) : end]


def first_thinking(text: str) -> str | None:
    """The text of the first ``<think>...</think>``, or None."""
    return _tagged(text, "<think>", "</think>")


def has_think_format(text: str) -> bool:
    """Whether ``text.strip()`` is ``<think>A</think>`` + whitespace + ``<answer>B</answer>`` for some A, B
    (``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", ..., re.DOTALL)``, Seg-Zero's strict
    format), decided in linear time."""
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    last_open = len(text) - len("</answer>") - len("<answer>")  # the latest place <answer> may start
    close = text.find("</think>", len("<think>"))
    while close >= 0:
        after = close + len("</think>")
        stop = after
        while stop < len(text) and text[stop].isspace():
            stop += 1
        if stop > last_open:
            return False
        if text.startswith("<answer>", stop):
            return True
        close = text.find("</think>", after)
    return False


def parse_answer(completion: str) -> dict[str, Any] | None:
    """The JSON object in the first ``<answer>...</answer>``, or None (no answer, not JSON, not an object).

    A list holding exactly one object is unwrapped (seed answers ``[{...}]``). Never raises.
    """
    content = _tagged(completion, "<answer>", "</answer>") if isinstance(completion, str) else None
    if content is None:
        return None
    try:
        data = json.loads(content.strip())
    except (ValueError, RecursionError):  # JSONDecodeError, int digit limits, deep nesting
        return None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    return data if isinstance(data, dict) else None


def _box(value: Any) -> list[float] | None:
    """A list/tuple of 6 finite numbers as floats, or None (order not checked)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 6:
        return None
    numbers = [finite_number(v) for v in value]
    return None if any(v is None for v in numbers) else numbers  # type: ignore[return-value]


def answer_box(answer: Mapping[str, Any] | None) -> list[float] | None:
    """The answer's ``bbox_3d`` when it is 6 finite numbers with ``x1 <= x2, y1 <= y2, z1 <= z2``."""
    box = _box(answer.get("bbox_3d")) if answer is not None else None
    if box is None or any(box[k] > box[k + 3] for k in range(3)):
        return None
    return box


def valid_answer(answer: Mapping[str, Any]) -> bool:
    """The required fields with the right types: an ordered box of 6 numbers, two numbers."""
    return (
        answer_box(answer) is not None
        and finite_number(answer.get("peak_slice")) is not None
        and finite_number(answer.get("tumor_ratio")) is not None
    )


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
