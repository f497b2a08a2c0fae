"""Video temporal grounding: find when a sentence happens in a clip.

The prompt gives the clip's length and the sentence; the answer is ``<answer>S to E</answer>`` in one
of three formats (:class:`TemporalFormat`, written by :func:`format_span`):

* absolute: ``<answer>11.3 to 15.0</answer>``, seconds from the clip start, one decimal;
* relative: ``<answer>0.45 to 0.60</answer>``, ``b / num_bins`` for the bins of :func:`span_bins`,
  with :func:`relative_decimals` decimals;
* temporal tokens: ``<answer><45> to <60></answer>``, the same bins as tokens ``<0>``..``<999>``
  (:mod:`vlmlab.models.temporal_tokens` adds them to the tokenizer).

The target (:class:`GroundingTarget`) is in seconds of the trimmed clip and says how its answer is
written, so a reward or a metric can read an answer without the data's configuration.

The baseline a model must beat is :func:`constant_answer`: the targets' mean span, in the unit the
answer speaks (fractions of the clip when relative, seconds otherwise), one answer for every clip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from vlmlab.tasks.numbers import finite_number

__all__ = [
    "NUM_TEMPORAL_TOKENS",
    "GroundingTarget",
    "TemporalFormat",
    "answer_iou",
    "as_span",
    "clip_span",
    "constant_answer",
    "format_span",
    "grounding_prompt",
    "last_answer",
    "overlap",
    "parse_span",
    "predicted_span",
    "read_spans",
    "relative_decimals",
    "span_bins",
    "span_iou",
    "temporal_format",
]

NUM_TEMPORAL_TOKENS = 1000  # <0> .. <999>
Span = tuple[float, float]


@dataclass(frozen=True)
class TemporalFormat:
    """How timestamps are written in prompts and answers.

    use_relative_timestamps: fractions of the clip (0-1) quantised to ``num_bins``; else seconds.
    num_bins: bins of the relative scale: a time ``t`` becomes ``round(t / duration * num_bins)``,
        one of ``0..num_bins`` (ignored for absolute seconds).
    use_temporal_tokens: write the bins as tokens ``<b>`` (needs relative timestamps and
        ``num_bins <= 999``, the last token being ``<999>``).
    """

    use_relative_timestamps: bool = True
    num_bins: int = 100
    use_temporal_tokens: bool = False

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"temporal num_bins must be >= 1, got {self.num_bins}")
        if self.use_temporal_tokens and not self.use_relative_timestamps:
            raise ValueError(
                "use_temporal_tokens needs use_relative_timestamps=true (tokens are bins of the clip)"
            )
        if self.use_temporal_tokens and self.num_bins > NUM_TEMPORAL_TOKENS - 1:
            raise ValueError(
                f"use_temporal_tokens needs num_bins <= {NUM_TEMPORAL_TOKENS - 1} (bins 0..num_bins are tokens "
                f"<0>..<{NUM_TEMPORAL_TOKENS - 1}>), got {self.num_bins}"
            )


@dataclass(frozen=True)
class GroundingTarget:
    """The ground truth of one clip: ``timestamp [s, e]`` seconds from the clip start (inside
    ``[0, duration]``), the clip's ``duration``, and the answer format (``relative``, ``num_bins``,
    ``temporal_tokens``: the fields of :class:`TemporalFormat`)."""

    timestamp: tuple[float, float]
    duration: float
    relative: bool = True
    num_bins: int = 100
    temporal_tokens: bool = False

    @classmethod
    def of(cls, start: float, end: float, duration: float, temporal: TemporalFormat) -> GroundingTarget:
        return cls(
            (float(start), float(end)),
            float(duration),
            temporal.use_relative_timestamps,
            temporal.num_bins,
            temporal.use_temporal_tokens,
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timestamp"] = list(self.timestamp)
        return out

    @classmethod
    def check(cls, target: Mapping[str, Any]) -> None:
        """Raise ValueError unless ``target`` can be scored: a positive duration, a valid format and
        ``timestamp [s, e]`` with ``0 <= s < e <= duration`` (a metric must not silently score a broken
        target as a miss)."""
        if not isinstance(target, Mapping):
            raise ValueError(f"temporal grounding target must be a dict, got {type(target).__name__}")
        duration = finite_number(target.get("duration"))
        if duration is None or duration <= 0:
            raise ValueError(f"target duration must be a finite number > 0, got {target.get('duration')!r}")
        if temporal_format(target) is None:
            raise ValueError(
                "target relative/num_bins/temporal_tokens do not form a valid TemporalFormat: "
                f"{ {k: target.get(k) for k in ('relative', 'num_bins', 'temporal_tokens')} }"
            )
        span = as_span(target.get("timestamp"))
        if span is None or not 0 <= span[0] < span[1] <= duration:
            raise ValueError(
                f"target timestamp must be [s, e] with 0 <= s < e <= duration={duration}, got {target.get('timestamp')!r}"
            )


def temporal_format(target: Mapping[str, Any]) -> TemporalFormat | None:
    """The answer format a target declares (``relative``, ``num_bins``, ``temporal_tokens``), or None
    if those fields are malformed. Missing fields take :class:`TemporalFormat`'s defaults."""
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


def relative_decimals(num_bins: int) -> int:
    """Decimals of a relative time: the fewest (at least 2) that write every ``b / num_bins`` exactly, at most 4.

    100 bins -> 2 ("0.45"), 1000 or 500 -> 3, 64 -> 4 (rounded).
    """
    for decimals in (2, 3, 4):
        if 10**decimals % num_bins == 0:
            return decimals
    return 4


def span_bins(start: float, end: float, duration: float, num_bins: int) -> tuple[int, int]:
    """Quantise a span of seconds to bins ``0..num_bins``: ``floor(t / duration * num_bins + 0.5)``.

    Rounds half up and clamps to the clip. A span shorter than a bin keeps one bin of length
    (end bin >= start bin + 1) so the answer is never an empty span.
    """

    def to_bin(t: float) -> int:
        return min(num_bins, max(0, math.floor(t / duration * num_bins + 0.5)))

    b_start, b_end = to_bin(start), to_bin(end)
    if b_end <= b_start:
        b_start, b_end = (b_start, b_start + 1) if b_start < num_bins else (num_bins - 1, num_bins)
    return b_start, b_end


def format_span(start: float, end: float, duration: float, temporal: TemporalFormat) -> str:
    """The answer text for the span ``[start, end]`` seconds of a clip of ``duration`` seconds."""
    if not temporal.use_relative_timestamps:
        return f"<answer>{start:.1f} to {end:.1f}</answer>"
    b_start, b_end = span_bins(start, end, duration, temporal.num_bins)
    if temporal.use_temporal_tokens:
        return f"<answer><{b_start}> to <{b_end}></answer>"
    d = relative_decimals(temporal.num_bins)
    return f"<answer>{b_start / temporal.num_bins:.{d}f} to {b_end / temporal.num_bins:.{d}f}</answer>"


def constant_answer(targets: Sequence[Mapping[str, Any]]) -> str:
    """The answer to give for every clip: the mean of the targets' spans, written by :func:`format_span`.

    Relative formats average the spans as fractions of each clip (``s / duration``), since that is what
    one answer means in every clip; absolute seconds average the seconds. Every target must pass
    :meth:`GroundingTarget.check` and all must share one format; raises ValueError otherwise or
    without targets.
    """
    if not targets:
        raise ValueError("a constant grounding answer needs at least one target")
    for target in targets:
        GroundingTarget.check(target)
    formats = {temporal_format(t) for t in targets}
    if len(formats) != 1:
        raise ValueError(f"targets mix answer formats: {sorted(map(repr, formats))}")
    temporal = formats.pop()
    assert temporal is not None  # checked above
    units = [float(t["duration"]) if temporal.use_relative_timestamps else 1.0 for t in targets]
    starts = [float(t["timestamp"][0]) / unit for t, unit in zip(targets, units, strict=True)]
    ends = [float(t["timestamp"][1]) / unit for t, unit in zip(targets, units, strict=True)]
    # A relative span is written for a clip of length 1; format_span ignores the length for seconds.
    return format_span(sum(starts) / len(starts), sum(ends) / len(ends), 1.0, temporal)


def grounding_prompt(sentence: str, duration: float, temporal: TemporalFormat) -> str:
    """The user's question: localise ``sentence`` and answer in the configured format."""
    if temporal.use_temporal_tokens:
        how = (
            f"as temporal tokens from <0> (start of the video) to <{temporal.num_bins}> (end of the video), "
            "in the form <answer><S> to <E></answer>"
        )
    elif temporal.use_relative_timestamps:
        d = relative_decimals(temporal.num_bins)
        how = (
            f"as fractions of the video's length from 0 to 1 with {d} decimals, "
            "in the form <answer>S to E</answer>"
        )
    else:
        how = "in seconds with one decimal, in the form <answer>S to E</answer>"
    return (
        f'The video is {duration:.1f} seconds long. When does this happen: "{sentence}"? '
        f"Give the start S and the end E of the moment {how}."
    )


# The text of an answer block with its whitespace collapsed to single spaces: every quantifier below
# is then bounded by the next literal, so matching is linear in the text's length.
_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_SPAN_TEXT = re.compile(rf" ?(<)? ?({_NUMBER}) ?>? ?to ?<? ?({_NUMBER}) ?>? ?")


def last_answer(text: str) -> str | None:
    """The text inside the last ``<answer>...</answer>`` of ``text``, or None; linear time."""
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    return None if start < 0 else text[start + len("<answer>") : end]


def parse_span(text: str, duration: float, temporal: TemporalFormat) -> Span | None:
    """The span ``(start, end)`` in seconds of the last ``<answer>S to E</answer>`` in ``text``, or None.

    Reads the formats of :func:`format_span`: seconds, relative fractions, or temporal tokens ``<b>``
    (bin ``b`` is ``b / num_bins`` of the clip); whitespace is free. Never raises and runs in linear
    time whatever the text; the span may be reversed or outside the clip (rewards judge that).
    """
    answer = last_answer(text) if isinstance(text, str) else None
    if answer is None:
        return None
    match = _SPAN_TEXT.fullmatch(" ".join(answer.split()))
    if match is None:
        return None
    token, s, e = match.groups()
    try:
        start, end = float(s), float(e)
    except (ValueError, OverflowError):
        return None
    if not temporal.use_relative_timestamps:
        return start, end
    if token:  # <b> tokens are bin indices
        start, end = start / temporal.num_bins, end / temporal.num_bins
    return start * duration, end * duration


def as_span(value: Any) -> Span | None:
    """``value`` as a finite ``(start, end)`` with ``start < end``, or None."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return None
    start, end = finite_number(value[0]), finite_number(value[1])
    if start is None or end is None or not start < end:
        return None
    return start, end


def predicted_span(completion: str, duration: float, temporal: TemporalFormat) -> Span | None:
    """The answer's span in seconds, unclipped, if it is finite with ``start < end``; else None."""
    span = parse_span(completion, duration, temporal)
    return as_span(span) if span is not None else None


def clip_span(span: Span, duration: float) -> Span:
    """``span`` clipped to the clip ``[0, duration]`` (it may become empty)."""
    return min(max(span[0], 0.0), duration), min(max(span[1], 0.0), duration)


def overlap(a: Span, b: Span) -> float:
    """Length of the intersection of two spans (0 when they do not meet)."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def span_iou(pred: Sequence[float], gt: Sequence[float]) -> float:
    """IoU of two spans ``(start, end)`` in [0, 1]; an invalid span (non-finite, ``end <= start``) gives 0."""
    a, b = as_span(pred), as_span(gt)
    if a is None or b is None:
        return 0.0
    inter = overlap(a, b)
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    iou = inter / union if union > 0 else 0.0
    return min(1.0, max(0.0, iou)) if math.isfinite(iou) else 0.0


def read_spans(completion: str, target: Mapping[str, Any]) -> tuple[Span | None, Span | None]:
    """``(the answer's span, the true span)`` in seconds, both clipped to the clip ``[0, duration]``.

    The answer's span (:func:`predicted_span`, read in the target's format) is None when the answer has
    no valid span or the target's duration or format cannot be read; an answer outside the clip clips
    to an empty span. The true span is None when the target's ``timestamp`` is not ``[s, e]``, s < e.
    Never raises.
    """
    target = target if isinstance(target, Mapping) else {}
    duration = finite_number(target.get("duration"))
    temporal = temporal_format(target)
    if duration is None or duration <= 0 or temporal is None:
        return None, None
    pred = predicted_span(completion if isinstance(completion, str) else "", duration, temporal)
    truth = as_span(target.get("timestamp"))
    return (
        None if pred is None else clip_span(pred, duration),
        None if truth is None else clip_span(truth, duration),
    )


def answer_iou(completion: str, target: Mapping[str, Any]) -> tuple[float, bool]:
    """``(IoU of the answer's span with the true span, whether the answer has a valid span)`` (both
    clipped as in :func:`read_spans`; 0 when either is missing). Never raises."""
    pred, truth = read_spans(completion, target)
    iou = span_iou(pred, truth) if pred is not None and truth is not None else 0.0
    return iou, pred is not None
