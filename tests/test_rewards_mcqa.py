"""The seed-004 multiple-choice reward (vlmlab.rewards.mcqa): answer letter and format, robustness."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmlab.rewards.mcqa import DEFAULT_WEIGHTS, MAX_TOTAL, score
from vlmlab.tasks.mcqa import answer_letter, format_answer

TARGET = {"answer_label": "B", "options": {"A": "red", "B": "blue"}, "dataset_name": "x", "dataset_index": 3}


def test_default_weights() -> None:
    assert DEFAULT_WEIGHTS == {"accuracy": 1.0, "format": 0.5}
    assert MAX_TOTAL == 1.5


@pytest.mark.parametrize(
    ("text", "accuracy", "fmt"),
    [
        ("<answer>B</answer>", 1.0, 0.5),
        ("<think>Blue is B.</think><answer>B</answer>", 1.0, 0.5),
        ("  <think>\nx\n</think>\n\n<answer> (b). </answer>\n", 1.0, 0.5),  # spaces, lower case, (X).
        ("<answer>B.</answer>", 1.0, 0.5),
        ("<answer>(B)</answer>", 1.0, 0.5),
        ("<answer>B)</answer>", 1.0, 0.5),
        ("<answer>A</answer>", 0.0, 0.5),  # well formed, wrong
        ("<answer>B. blue</answer>", 0.0, 0.0),  # words are not a letter
        ("<answer>The answer is B</answer>", 0.0, 0.0),
        ("<answer>AB</answer>", 0.0, 0.0),
        ("The answer is B", 0.0, 0.0),  # no tags
        ("<ANSWER>B</ANSWER>", 0.0, 0.0),  # tags are case-sensitive
        ("I pick <answer>B</answer>", 1.0, 0.0),  # text before: readable, not well formed
        ("<answer>B</answer> because", 1.0, 0.0),
        ("<answer>A</answer><answer>B</answer>", 1.0, 0.0),  # the last answer counts; two answers
        ("<think><answer>A</answer></think><answer>B</answer>", 1.0, 0.0),  # tag inside the thinking
        ("<think>a</think><think>b</think><answer>B</answer>", 1.0, 0.0),  # two thoughts
        ("<think>unfinished<answer>B</answer>", 1.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_score_table(text: str, accuracy: float, fmt: float) -> None:
    assert score(text, TARGET) == {"accuracy": accuracy, "format": fmt, "total": accuracy + fmt}


def test_sft_answers_score_the_max() -> None:
    assert score(format_answer("B", "The lesion is blue."), TARGET)["total"] == MAX_TOTAL
    assert score(format_answer("B"), TARGET)["total"] == MAX_TOTAL


@pytest.mark.parametrize("label", ["B", "b", " B "])
def test_label_is_compared_case_insensitively(label: str) -> None:
    assert score("<answer>b</answer>", {"answer_label": label})["accuracy"] == 1.0


def test_answer_letter() -> None:
    assert answer_letter("<answer>c</answer>") == "C"
    assert answer_letter("<answer>maybe C</answer>") is None
    assert answer_letter("no answer") is None


def test_weights_scale_and_are_checked() -> None:
    assert score("<answer>B</answer>", TARGET, {"format": 0.0}) == {
        "accuracy": 1.0,
        "format": 0.0,
        "total": 1.0,
    }
    assert score("<answer>B</answer>", TARGET, {"accuracy": 2.0})["total"] == 2.5
    with pytest.raises(ValueError, match="letter"):
        score("", TARGET, {"letter": 1.0})
    with pytest.raises(ValueError, match="accuracy"):
        score("", TARGET, {"accuracy": math.nan})


@pytest.mark.parametrize("target", [{}, None, "B", {"answer_label": None}, {"answer_label": ""}, {"answer_label": "AB"},
                                    {"answer_label": 1}, {"answer_label": ["B"]}, {"answer_label": "É"}])  # fmt: skip
def test_malformed_target_scores_zero_accuracy(target: object) -> None:
    result = score("<answer>B</answer>", target)  # type: ignore[arg-type]
    assert result == {"accuracy": 0.0, "format": 0.5, "total": 0.5}  # format does not need the target


FRAGMENTS = [
    "<answer>", "</answer>", "<think>", "</think>", "A", "b", "(", ")", ".", " ", "\n", "B. blue",
    "é", "💊", "\x00", "<answer>B", "</answer></answer>", "9" * 50,
]  # fmt: skip
ADVERSARIAL = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=6), max_size=30).map("".join)
ODD_TARGETS = st.one_of(
    st.fixed_dictionaries({}, optional={"answer_label": st.text(max_size=3) | st.integers() | st.none()}),
    st.none(),
    st.integers(),
    st.just(TARGET),
)


@settings(max_examples=200, deadline=None)
@given(text=st.text() | ADVERSARIAL, target=ODD_TARGETS)
def test_any_text_and_target_never_raise_and_stay_in_range(text: str, target: object) -> None:
    result = score(text, target)  # type: ignore[arg-type]
    assert list(result) == [*DEFAULT_WEIGHTS, "total"]
    assert result["accuracy"] in (0.0, 1.0) and result["format"] in (0.0, 0.5)
    assert 0.0 <= result["total"] <= MAX_TOTAL
