"""The seed-001 temporal-grounding reward (vlmlab.rewards.temporal): IoU, overlap modes, format, robustness."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmlab.rewards.temporal import DEFAULT_WEIGHTS, MAX_TOTAL, score, segment_overlap
from vlmlab.tasks.grounding import TemporalFormat, format_span, temporal_format
from vlmlab.tasks.grounding import span_iou as temporal_iou

SECONDS = {
    "timestamp": [2.0, 6.0],
    "duration": 10.0,
    "relative": False,
    "num_bins": 100,
    "temporal_tokens": False,
}
RELATIVE = {**SECONDS, "relative": True}
TOKENS = {**SECONDS, "relative": True, "temporal_tokens": True}


def test_seed_weights() -> None:
    assert DEFAULT_WEIGHTS == {"temporal_iou": 1.0, "segment_overlap": 0.5, "format": 0.5}
    assert MAX_TOTAL == 2.0


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ((0, 4), (2, 6), 1 / 3),  # inter 2, union 6
        ((0, 10), (2, 4), 0.2),
        ((2, 6), (2, 6), 1.0),
        ((0, 1), (2, 3), 0.0),  # disjoint
        ((0, 2), (2, 3), 0.0),  # touching
        ((4, 0), (2, 6), 0.0),  # reversed
        ((3, 3), (2, 6), 0.0),  # empty
        ((0, math.nan), (2, 6), 0.0),
        ((0, 4), (6, 2), 0.0),  # reversed ground truth
    ],
)
def test_temporal_iou(pred: tuple, gt: tuple, expected: float) -> None:
    assert temporal_iou(pred, gt) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("pred", "gt", "recall", "precision", "f1"),
    [
        ((0, 4), (2, 6), 0.5, 0.5, 0.5),
        ((0, 10), (2, 4), 1.0, 0.2, 1 / 3),  # 2 * 0.2 * 1 / 1.2
        ((3, 4), (2, 6), 0.25, 1.0, 0.4),  # 2 * 0.25 / 1.25
        ((7, 8), (2, 6), 0.0, 0.0, 0.0),
        ((4, 0), (2, 6), 0.0, 0.0, 0.0),
    ],
)
def test_segment_overlap_modes(pred: tuple, gt: tuple, recall: float, precision: float, f1: float) -> None:
    assert segment_overlap(pred, gt, "recall") == pytest.approx(recall)
    assert segment_overlap(pred, gt, "precision") == pytest.approx(precision)
    assert segment_overlap(pred, gt, "f1") == pytest.approx(f1)
    assert segment_overlap(pred, gt) == pytest.approx(recall)  # the grounding recipe's mode is the default


def test_unknown_overlap_mode_raises() -> None:
    with pytest.raises(ValueError, match="iou"):
        segment_overlap((0, 1), (0, 1), "iou")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overlap_mode"):
        score("", SECONDS, overlap_mode="iou")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "target", "iou", "overlap", "fmt"),
    [
        ("<answer>0.0 to 4.0</answer>", SECONDS, 1 / 3, 0.25, 0.5),  # recall 0.5 * 0.5
        ("<answer>2.0 to 6.0</answer>", SECONDS, 1.0, 0.5, 0.5),
        ("<think>around two</think> <answer> 2 to 6 </answer>", SECONDS, 1.0, 0.5, 0.5),
        ("<answer>0.20 to 0.60</answer>", RELATIVE, 1.0, 0.5, 0.5),  # fractions of 10 s
        ("<answer>0.0 to 0.4</answer>", RELATIVE, 1 / 3, 0.25, 0.5),
        ("<answer><20> to <60></answer>", TOKENS, 1.0, 0.5, 0.5),  # bins of 100
        ("<answer><0> to <100></answer>", TOKENS, 0.4, 0.5, 0.5),
        ("<answer>4.0 to 15.0</answer>", SECONDS, 0.25, 0.25, 0.5),  # clipped to (4, 10): inter 2, union 8
        ("<answer>6.0 to 2.0</answer>", SECONDS, 0.0, 0.0, 0.0),  # reversed: format 0
        ("<answer>3.0 to 3.0</answer>", SECONDS, 0.0, 0.0, 0.0),  # empty span
        ("<answer>12.0 to 15.0</answer>", SECONDS, 0.0, 0.0, 0.5),  # formatted, outside the clip
        ("2.0 to 6.0", SECONDS, 0.0, 0.0, 0.0),  # no tags
        ("<answer>two to six</answer>", SECONDS, 0.0, 0.0, 0.0),
        ("<answer>0 to 1</answer> <answer>2 to 6</answer>", SECONDS, 1.0, 0.5, 0.5),  # the last counts
        ("<answer>0 to 9" + "9" * 400 + "</answer>", SECONDS, 0.0, 0.0, 0.0),  # overflows to inf
        ("", SECONDS, 0.0, 0.0, 0.0),
    ],
)
def test_score_table(text: str, target: dict, iou: float, overlap: float, fmt: float) -> None:
    result = score(text, target)
    assert result["temporal_iou"] == pytest.approx(iou)
    assert result["segment_overlap"] == pytest.approx(overlap)
    assert result["format"] == fmt
    assert result["total"] == pytest.approx(iou + overlap + fmt)


def test_clipping_is_to_the_clip() -> None:
    """(4, 15) in a 10 s clip is (4, 10): against (2, 6) the overlap is 2, the union 8."""
    assert score("<answer>4.0 to 15.0</answer>", SECONDS)["temporal_iou"] == pytest.approx(2 / 8)


def test_target_format_defaults_when_absent() -> None:
    """A target without relative / num_bins / temporal_tokens reads answers like TemporalFormat()."""
    target = {"timestamp": [2.0, 6.0], "duration": 10.0}
    assert temporal_format(target) == TemporalFormat()
    assert score("<answer>0.20 to 0.60</answer>", target)["total"] == 2.0


@pytest.mark.parametrize(
    "temporal",
    [
        TemporalFormat(False),
        TemporalFormat(True, 100),
        TemporalFormat(True, 1000),
        TemporalFormat(True, 100, True),
    ],
)
@pytest.mark.parametrize("span", [(2.0, 6.0), (0.0, 10.0), (3.3, 3.4)])
def test_the_sft_answer_scores_high(temporal: TemporalFormat, span: tuple[float, float]) -> None:
    """format_span's own answer parses back to (nearly) the true span."""
    target = {
        "timestamp": list(span),
        "duration": 10.0,
        "relative": temporal.use_relative_timestamps,
        "num_bins": temporal.num_bins,
        "temporal_tokens": temporal.use_temporal_tokens,
    }
    result = score(format_span(*span, 10.0, temporal), target)
    assert result["format"] == 0.5
    assert result["segment_overlap"] == pytest.approx(0.5)  # the bins cover the span
    assert result["temporal_iou"] == pytest.approx(1.0)  # spans on bin edges come back exactly


def test_overlap_mode_and_weights() -> None:
    text = "<answer>0.0 to 10.0</answer>"  # covers (2, 6): recall 1, precision 0.4
    assert score(text, SECONDS, overlap_mode="precision")["segment_overlap"] == pytest.approx(0.2)
    assert score(text, SECONDS, overlap_mode="f1")["segment_overlap"] == pytest.approx(0.5 * 0.8 / 1.4)
    weighted = score(text, SECONDS, {"format": 2.0, "segment_overlap": 0.0})
    assert weighted == pytest.approx(
        {"temporal_iou": 0.4, "segment_overlap": 0.0, "format": 2.0, "total": 2.4}
    )


@pytest.mark.parametrize("weights", [{"iou": 1.0}, {"format": -1}, {"format": math.inf}])
def test_bad_weights_raise(weights: dict) -> None:
    with pytest.raises(ValueError, match=r"iou|format"):
        score("", SECONDS, weights)


@pytest.mark.parametrize(
    ("target", "fmt"),
    [
        ({}, 0.0),
        (None, 0.0),
        ([2, 6], 0.0),
        ({**SECONDS, "duration": 0}, 0.0),
        ({**SECONDS, "duration": -10.0}, 0.0),
        ({**SECONDS, "duration": math.nan}, 0.0),
        ({**SECONDS, "duration": "10"}, 0.0),
        ({**SECONDS, "relative": "no"}, 0.0),
        ({**SECONDS, "num_bins": 0}, 0.0),
        ({**SECONDS, "num_bins": 2.5}, 0.0),
        ({**SECONDS, "num_bins": True}, 0.0),
        ({**TOKENS, "num_bins": 1000}, 0.0),  # TemporalFormat refuses: no token <1000>
        ({**SECONDS, "relative": False, "temporal_tokens": True}, 0.0),  # refused too
        ({**SECONDS, "timestamp": [6.0, 2.0]}, 0.5),  # answer still readable: format counts
        ({**SECONDS, "timestamp": [2.0]}, 0.5),
        ({**SECONDS, "timestamp": "2 to 6"}, 0.5),
        ({**SECONDS, "timestamp": [math.nan, 6.0]}, 0.5),
        ({**SECONDS, "timestamp": [12.0, 15.0]}, 0.5),  # outside the clip: empty after clipping
    ],
)
def test_malformed_target_scores_zero(target: object, fmt: float) -> None:
    result = score("<answer>2.0 to 6.0</answer>", target)  # type: ignore[arg-type]
    assert result == {"temporal_iou": 0.0, "segment_overlap": 0.0, "format": fmt, "total": fmt}


# ------------------------------------------------------------------------------- properties

FRAGMENTS = [
    "<answer>", "</answer>", "<think>", "</think>", " to ", "to", "<", ">", "<999>", "<0>", "<1000>",
    "0", "0.5", "1.", ".5", "10", "1e5", "9" * 400, "NaN", "inf", "-", " ", "\n", "é", "🎬", "\x00",
]  # fmt: skip
ADVERSARIAL = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=30).map("".join)
NUMBERS = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**30), 10**30)
    | st.booleans()
    | st.none()
)
ODD_TARGETS = st.one_of(
    st.fixed_dictionaries(
        {"duration": NUMBERS | st.text(max_size=3)},
        optional={
            "timestamp": st.lists(NUMBERS, max_size=3) | NUMBERS,
            "relative": st.booleans() | NUMBERS,
            "num_bins": st.integers(-5, 2000) | NUMBERS,
            "temporal_tokens": st.booleans() | NUMBERS,
        },
    ),
    NUMBERS,
    st.sampled_from([SECONDS, RELATIVE, TOKENS]),
)


@settings(max_examples=200, deadline=None)
@given(text=st.text() | ADVERSARIAL, target=ODD_TARGETS, mode=st.sampled_from(["recall", "precision", "f1"]))
def test_any_text_and_target_never_raise_and_stay_in_range(text: str, target: object, mode: str) -> None:
    result = score(text, target, overlap_mode=mode)  # type: ignore[arg-type]
    assert list(result) == [*DEFAULT_WEIGHTS, "total"]
    for name, weight in DEFAULT_WEIGHTS.items():
        assert 0.0 <= result[name] <= weight
    assert 0.0 <= result["total"] <= MAX_TOTAL


@settings(max_examples=200, deadline=None)
@given(pred=st.tuples(NUMBERS, NUMBERS), gt=st.tuples(NUMBERS, NUMBERS))
def test_span_measures_stay_in_unit_range(pred: tuple, gt: tuple) -> None:
    for value in (
        temporal_iou(pred, gt),
        *(segment_overlap(pred, gt, m) for m in ("recall", "precision", "f1")),
    ):
        assert 0.0 <= value <= 1.0
