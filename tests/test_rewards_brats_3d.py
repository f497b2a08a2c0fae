"""The seed-003 reward (vlmlab.rewards.brats_3d): every row of the DESIGN.md table, boundaries, robustness."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmlab.rewards.brats_3d import DEFAULT_WEIGHTS, MAX_TOTAL, score
from vlmlab.rewards.repetition import has_repetition
from vlmlab.tasks.brats_detection import box_iou_3d, format_answer, parse_answer

TARGET = {"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20, "tumor_ratio": 0.5}
THINK = "<think>This video shows 4 MRI sequences.</think>"


def answer(
    bbox: object = (0, 0, 0, 10, 1, 1), peak: object = 20, ratio: object = 0.5, think: str = THINK
) -> str:
    body = {
        "bbox_3d": list(bbox) if isinstance(bbox, tuple) else bbox,
        "peak_slice": peak,
        "tumor_ratio": ratio,
    }
    return f"{think}<answer>{json.dumps(body)}</answer>"


def test_design_table_weights_and_max() -> None:
    assert DEFAULT_WEIGHTS == {
        "think_format": 0.5,
        "video_keyword": 0.5,
        "json_format": 1.0,
        "iou_3d": 3.0,
        "peak_slice": 1.5,
        "tumor_ratio": 1.5,
        "non_repetition": 0.5,
    }
    assert MAX_TOTAL == 8.5


def test_perfect_sft_answer_scores_the_design_max() -> None:
    """The loader's own SFT answer (format_answer) for an integer box scores 8.5, every part at its weight."""
    box, peak, ratio = [10, 20, 3, 40, 50, 9], 5, 0.0123
    text = format_answer(box, peak, ratio)
    result = score(text, {"bbox_3d": box, "peak_slice": peak, "tumor_ratio": ratio})
    assert result == {**DEFAULT_WEIGHTS, "total": 8.5}
    assert list(result) == [*DEFAULT_WEIGHTS, "total"]


# ------------------------------------------------------------------------------- think_format


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think><answer>b</answer>", 0.5),
        ("  \n<think>a\nb</think>\n\n<answer>\nb\n</answer>\n ", 0.5),  # whitespace around / between
        ("<think></think><answer></answer>", 0.5),  # empty parts still match Seg-Zero's regex
        ("<answer>b</answer>", 0.0),  # no thinking
        ("<think>a</think>", 0.0),  # no answer
        ("x<think>a</think><answer>b</answer>", 0.0),  # text before
        ("<think>a</think><answer>b</answer>x", 0.0),  # text after
        ("<think>a</think>x<answer>b</answer>", 0.0),  # text between
        ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),  # tags are case-sensitive
        ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
    ],
)
def test_think_format(text: str, expected: float) -> None:
    assert score(text, TARGET)["think_format"] == expected


# ------------------------------------------------------------------------------ video_keyword


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>This video shows a tumour.</think>", 0.5),
        (
            "<think>  \nthis VIDEO shows a tumour.</think>",
            0.5,
        ),  # case-insensitive, stripped (the BraTS recipe)
        ("<think>The video shows a tumour.</think>", 0.0),
        ("<think>I think This video shows a tumour.</think>", 0.0),  # must start with it
        ("This video shows a tumour.", 0.0),  # not inside <think>
        ("<think>This video shows</think> <think>x</think>", 0.5),  # the first thinking counts
        ("<think>x</think><think>This video shows</think>", 0.0),
    ],
)
def test_video_keyword(text: str, expected: float) -> None:
    assert score(text, TARGET)["video_keyword"] == expected


# -------------------------------------------------------------------------------- json_format


@pytest.mark.parametrize(
    ("answer_text", "expected"),
    [
        ('{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20, "tumor_ratio": 0.5}', 1.0),
        ('[{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20, "tumor_ratio": 0.5}]', 1.0),  # list form
        ('{"bbox_3d": [0.5, 0, 0, 10.5, 1, 1], "peak_slice": 20.0, "tumor_ratio": 1, "x": 1}', 1.0),
        ('{"bbox_3d": [3, 3, 3, 3, 3, 3], "peak_slice": 20, "tumor_ratio": 0.5}', 1.0),  # degenerate is a box
        ('{"bbox_3d": [0, 0, 0, 10, 1], "peak_slice": 20, "tumor_ratio": 0.5}', 0.0),  # 5 numbers
        ('{"bbox_3d": [0, 0, 0, 10, 1, "1"], "peak_slice": 20, "tumor_ratio": 0.5}', 0.0),  # a string
        ('{"bbox_3d": [0, 0, 0, 10, 1, true], "peak_slice": 20, "tumor_ratio": 0.5}', 0.0),  # a bool
        ('{"bbox_3d": [10, 0, 0, 0, 1, 1], "peak_slice": 20, "tumor_ratio": 0.5}', 0.0),  # x1 > x2
        ('{"bbox_3d": [0, 0, 0, 10, 1, NaN], "peak_slice": 20, "tumor_ratio": 0.5}', 0.0),
        ('{"bbox_3d": [0, 0, 0, 10, 1, 1e999], "peak_slice": 20, "tumor_ratio": 0.5}', 0.0),  # inf
        ('{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": "20", "tumor_ratio": 0.5}', 0.0),
        ('{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20, "tumor_ratio": null}', 0.0),
        ('{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20}', 0.0),  # missing field
        ("{'bbox_3d': [0, 0, 0, 10, 1, 1], 'peak_slice': 20, 'tumor_ratio': 0.5}", 0.0),  # not JSON
        ('{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20, "tumor_ratio": 0.5', 0.0),  # truncated
        ("[1, 2]", 0.0),  # not an object
    ],
)
def test_json_format(answer_text: str, expected: float) -> None:
    assert score(f"{THINK}<answer>{answer_text}</answer>", TARGET)["json_format"] == expected


def test_no_answer_tag_scores_nothing_on_json_and_geometry() -> None:
    """No fallback to the whole text: JSON outside <answer> earns nothing."""
    text = '{"bbox_3d": [0, 0, 0, 10, 1, 1], "peak_slice": 20, "tumor_ratio": 0.5}'
    result = score(text, TARGET)
    assert result["json_format"] == result["iou_3d"] == result["peak_slice"] == result["tumor_ratio"] == 0.0
    assert parse_answer(text) is None


def test_geometric_parts_are_judged_field_by_field() -> None:
    """A good box earns its IoU even when another field is malformed (then json_format is 0)."""
    result = score(answer(peak="twenty"), TARGET)
    assert (result["json_format"], result["iou_3d"], result["peak_slice"], result["tumor_ratio"]) == (
        0.0,
        3.0,
        0.0,
        1.5,
    )


# ------------------------------------------------------------------------------------- iou_3d


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 0, 2, 2, 2], [1, 1, 1, 3, 3, 3], 1 / 15),  # inter 1, union 8 + 8 - 1
        ([0, 0, 0, 1, 1, 1], [0, 0, 0, 2, 2, 2], 1 / 8),  # contained
        ([0, 0, 0, 2, 2, 2], [0, 0, 0, 2, 2, 2], 1.0),
        ([0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3], 0.0),  # disjoint
        ([0, 0, 0, 1, 1, 1], [1, 0, 0, 2, 1, 1], 0.0),  # touching faces
        ([0.5, 0, 0, 1.5, 1, 1], [0, 0, 0, 1, 1, 1], 1 / 3),  # continuous: inter 0.5, union 1.5
        ([2, 2, 2, 0, 0, 0], [0, 0, 0, 2, 2, 2], 0.0),  # inverted
        ([0, 0, 0, 0, 2, 2], [0, 0, 0, 2, 2, 2], 0.0),  # degenerate
        ([0, 0, 0, 2, 2], [0, 0, 0, 2, 2, 2], 0.0),  # 5 numbers
        ([0, 0, 0, 1e300, 1e300, 1e300], [0, 0, 0, 1e300, 1e300, 1e300], 0.0),  # overflows to inf/inf
    ],
)
def test_box_iou_3d(a: list[float], b: list[float], expected: float) -> None:
    assert box_iou_3d(a, b) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        # Target [0,0,0,10,1,1]; prediction [0,0,0,L,1,1] has IoU L / 10 (strict ">" thresholds).
        (10.0, 3.0),
        (7.000001, 3.0),  # IoU 0.7000001
        (7.0, 2.0),  # IoU exactly 0.7 is not > 0.7
        (5.000001, 2.0),
        (5.0, 1.0),
        (3.000001, 1.0),
        (3.0, 0.0),
        (1.0, 0.0),
        (0.0, 0.0),  # degenerate prediction
    ],
)
def test_iou_tiers(length: float, expected: float) -> None:
    assert score(answer(bbox=(0, 0, 0, length, 1, 1)), TARGET)["iou_3d"] == expected


# --------------------------------------------------------------------------------- peak_slice


@pytest.mark.parametrize(
    ("peak", "expected"),
    [
        (20, 1.5),
        (23, 1.5),  # error exactly 3 (inclusive)
        (17, 1.5),
        (23.0001, 1.05),
        (25, 1.05),  # exactly 5
        (25.0001, 0.45),
        (30, 0.45),  # exactly 10
        (10, 0.45),
        (30.0001, 0.0),
        (-1000, 0.0),
    ],
)
def test_peak_slice_tiers(peak: float, expected: float) -> None:
    assert score(answer(peak=peak), TARGET)["peak_slice"] == expected


# -------------------------------------------------------------------------------- tumor_ratio


def test_decimal_boundary_needs_the_tolerance() -> None:
    """0.55 against 0.5 is a 10% error to a person but 0.10000000000000009 in floats: hence TOLERANCE."""
    assert abs(0.55 - 0.5) / 0.5 > 0.1
    assert score(answer(ratio=0.55), TARGET)["tumor_ratio"] == 1.5


@pytest.mark.parametrize(
    ("true_ratio", "pred", "expected"),
    [
        (0.5, 0.5, 1.5),
        (0.625, 0.6875, 1.5),  # error exactly 0.0625 / 0.625 = 0.1, exact in binary
        (0.5, 0.55, 1.5),  # 10% (decimal)
        (0.5, 0.45, 1.5),
        (0.5, 0.5500001, 1.05),
        (0.5, 0.6, 1.05),  # 20%
        (0.625, 0.75, 1.05),  # exactly 0.2 in binary
        (0.5, 0.6000001, 0.45),
        (0.5, 0.35, 0.45),  # 30%
        (0.5, 0.6500001, 0.0),
        (0.5, -0.5, 0.0),
        (0.0, 0.0, 1.5),  # a true ratio of 0: only 0 is right (the BraTS recipe)
        (0.0, 0.01, 0.0),
    ],
)
def test_tumor_ratio_tiers(true_ratio: float, pred: float, expected: float) -> None:
    assert score(answer(ratio=pred), {**TARGET, "tumor_ratio": true_ratio})["tumor_ratio"] == expected


# ----------------------------------------------------------------------------- non_repetition


@pytest.mark.parametrize(
    ("text", "repeats"),
    [
        ("The tumour is large. It is in frame 5.", False),
        ("The tumour is large. The tumour is large.", True),
        ("The tumour is large.\nthe   TUMOUR is large!", True),  # normalised: case, spaces, final mark
        ("Ratio 1.5 and 2.5. Ratio 1.5 and 3.5.", False),  # "1.5" is not a sentence break
        ("<think>A tumour</think><answer>A tumour</answer>", True),  # tags break sentences
        ("- x\n- y\n-", False),  # pieces without letters or digits are ignored
        ("", False),
    ],
)
def test_non_repetition(text: str, repeats: bool) -> None:
    assert has_repetition(text) is repeats
    assert score(text, TARGET)["non_repetition"] == (0.0 if repeats else 0.5)


# ------------------------------------------------------------------------------------ weights


def test_weights_scale_the_tiers_and_keep_their_ratios() -> None:
    weights = {"iou_3d": 6.0, "peak_slice": 3.0, "non_repetition": 0.0}
    result = score(answer(bbox=(0, 0, 0, 6, 1, 1), peak=25), TARGET, weights)  # IoU 0.6, error 5
    assert result["iou_3d"] == 4.0  # 2.0 * 6 / 3
    assert result["peak_slice"] == pytest.approx(2.1)  # 1.05 * 3 / 1.5
    assert result["non_repetition"] == 0.0
    assert result["think_format"] == 0.5  # not overridden: default
    assert result["total"] == pytest.approx(sum(v for k, v in result.items() if k != "total"))


@pytest.mark.parametrize("weights", [{"iou": 1.0}, {"iou_3d": -1.0}, {"iou_3d": math.nan}, {"iou_3d": "3"}])
def test_bad_weights_raise(weights: dict) -> None:
    with pytest.raises(ValueError, match="iou"):
        score(answer(), TARGET, weights)


# --------------------------------------------------------------------------- malformed targets


@pytest.mark.parametrize(
    ("target", "zero"),
    [
        ({}, ("iou_3d", "peak_slice", "tumor_ratio")),
        (None, ("iou_3d", "peak_slice", "tumor_ratio")),
        ("not a dict", ("iou_3d", "peak_slice", "tumor_ratio")),
        ({**TARGET, "bbox_3d": [0, 0, 0, 10, 1]}, ("iou_3d",)),
        ({**TARGET, "bbox_3d": [0, 0, 0, 10, 1, math.nan]}, ("iou_3d",)),
        ({**TARGET, "bbox_3d": [0, 0, 0, 0, 1, 1]}, ("iou_3d",)),  # degenerate target box
        ({**TARGET, "peak_slice": True}, ("peak_slice",)),
        ({**TARGET, "peak_slice": math.inf}, ("peak_slice",)),
        ({**TARGET, "tumor_ratio": -0.5}, ("tumor_ratio",)),
        ({**TARGET, "tumor_ratio": "0.5"}, ("tumor_ratio",)),
        ({**TARGET, "tumor_ratio": 10**400}, ("tumor_ratio",)),  # too big for a float
    ],
)
def test_malformed_target_scores_zero_on_its_parts(target: object, zero: tuple[str, ...]) -> None:
    result = score(answer(), target)  # type: ignore[arg-type]
    for name in zero:
        assert result[name] == 0.0
    for name in {"iou_3d", "peak_slice", "tumor_ratio"} - set(zero):
        assert result[name] == DEFAULT_WEIGHTS[name]
    assert result["json_format"] == 1.0  # the answer's format does not depend on the target


def test_deterministic() -> None:
    text = answer(bbox=(1, 0, 0, 9, 1, 1), peak=24, ratio=0.6)
    assert score(text, TARGET) == score(text, TARGET)


# ------------------------------------------------------------------------------- properties

FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "<THINK>", "{", "}", "[", "]", ",", ":", '"',
    '"bbox_3d"', '"peak_slice"', '"tumor_ratio"', "This video shows", ". ", ".", "\n", " ",
    "0", "-3", "0.5", "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "9" * 400, "1" * 5000,
    "null", "true", "é", "🧠", "\x00", "\\", "[[[[[[[[[[", "'",
]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
ADVERSARIAL = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40).map("".join)
ANSWER_LIKE = st.builds(
    lambda box, peak, ratio, think: (
        f"<think>{think}</think><answer>"
        + json.dumps({"bbox_3d": box, "peak_slice": peak, "tumor_ratio": ratio})
        + "</answer>"
    ),
    st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(), min_size=5, max_size=7),
    JSON_VALUES,
    JSON_VALUES,
    st.sampled_from(["This video shows x.", "", "a. a."]),
)
ODD_TARGETS = st.one_of(
    st.fixed_dictionaries(
        {"bbox_3d": JSON_VALUES | st.lists(st.floats() | st.integers(), min_size=6, max_size=6)},
        optional={"peak_slice": JSON_VALUES, "tumor_ratio": JSON_VALUES},
    ),
    JSON_VALUES,
    st.just(TARGET),
)


def check_bounds(result: dict[str, float]) -> None:
    assert list(result) == [*DEFAULT_WEIGHTS, "total"]
    for name, weight in DEFAULT_WEIGHTS.items():
        assert 0.0 <= result[name] <= weight
    assert 0.0 <= result["total"] <= MAX_TOTAL
    assert result["total"] == sum(result[name] for name in DEFAULT_WEIGHTS)


@settings(max_examples=200, deadline=None)
@given(text=st.text() | ADVERSARIAL | ANSWER_LIKE, target=ODD_TARGETS)
def test_any_text_and_target_never_raise_and_stay_in_range(text: str, target: object) -> None:
    check_bounds(score(text, target))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(text=ADVERSARIAL | ANSWER_LIKE)
def test_parse_answer_never_raises(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed is None or isinstance(parsed, dict)
