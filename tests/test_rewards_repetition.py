"""The non-repetition reward: loops, stutters and copied sentences lose it; normal answers keep it."""

from __future__ import annotations

import pytest

from vlmlab.rewards import brats_3d, repetition
from vlmlab.rewards.compose import Reward, RewardTerm
from vlmlab.rewards.repetition import has_repetition, repeats_a_sentence, repeats_an_ngram, score
from vlmlab.tasks.brats_detection import format_answer
from vlmlab.tasks.mcqa import format_answer as mcqa_answer

LOOPS_AND_STUTTERS = [
    # The loop of issue 10: no sentence repeats, but "largest in frames" comes three times.
    "<think>This video shows largest in frames largest in frames largest in frames</think>",
    "the the the the the",  # "the the the" at 0, 1, 2
    "left side, left side, left side, left side",  # "left side left" at words 0, 2, 4
    "<answer>A A A A A</answer>",  # "a a a" x3
]
NORMAL = [
    "",
    "<answer>B</answer>",
    "<think>The image shows a bright disc in the upper left.</think><answer>C</answer>",
    # A phrase twice is normal prose: "of the tumour" x2.
    "The edge of the tumour is sharp; the core of the tumour is dark.",
    format_answer([3, 4, 0, 20, 22, 9], 5, 0.0123),
    format_answer([0, 0, 0, 10, 10, 10], 0, 0.5),
    mcqa_answer("D", "Option D names the organ the arrow points at, the liver."),
]


@pytest.mark.parametrize("text", LOOPS_AND_STUTTERS)
def test_loops_and_stutters_lose_the_reward(text: str) -> None:
    assert repeats_an_ngram(text)
    assert has_repetition(text)
    assert score(text) == {"non_repetition": 0.0, "total": 0.0}


@pytest.mark.parametrize("text", NORMAL)
def test_normal_answers_keep_the_reward(text: str) -> None:
    assert not has_repetition(text)
    assert score(text, {"any": "target"}) == {"non_repetition": 0.5, "total": 0.5}


def test_ngram_counts_by_hand() -> None:
    # "a b c" at 0 and 3: twice is allowed, a third time is not.
    assert not repeats_an_ngram("a b c a b c")
    assert repeats_an_ngram("a b c a b c a b c")
    assert repeats_an_ngram("a b c a b c", max_count=1)
    assert not repeats_an_ngram("A b C a B c x", n=3, max_count=2)  # case-folded: still twice
    assert repeats_an_ngram("x x", n=1, max_count=1)
    assert not repeats_an_ngram("x y", n=3)  # shorter than an n-gram
    with pytest.raises(ValueError, match="n >= 1"):
        repeats_an_ngram("x", n=0)


def test_a_copied_sentence_loses_the_reward_with_few_words() -> None:
    text = "It is big. It is big."
    assert repeats_a_sentence(text) and not repeats_an_ngram(text)
    assert score(text)["total"] == 0.0


def test_weights_and_composition() -> None:
    assert score("x", weights={"non_repetition": 2.0})["total"] == 2.0
    with pytest.raises(ValueError, match="unknown reward component"):
        score("x", weights={"repetition": 1.0})
    reward = Reward({"rep": RewardTerm(repetition.score)})
    assert [r["total"] for r in reward(["ok answer", "go go go go go"], [{}, {}])] == [0.5, 0.0]


def test_brats_reward_uses_the_same_rule() -> None:
    loop = LOOPS_AND_STUTTERS[0]
    assert brats_3d.score(loop, {})["non_repetition"] == 0.0


def test_long_adversarial_text_is_scored() -> None:
    # 200,000 characters of whitespace, of one word, and of distinct words (a quadratic check would
    # stall here for minutes; speed itself is bench/'s business, not a timed test's).
    assert score(" " * 200_000)["total"] == 0.5
    assert score("ab " * 66_000)["total"] == 0.0
    assert score(" ".join(f"w{i}" for i in range(30_000)))["total"] == 0.5
