"""Every reward and every task parser reads a 200,000-character adversarial completion in linear time.

A GRPO completion is whatever the policy samples: a run of whitespace, an ``<answer>`` opened again
and again, a number with a hundred thousand digits. The parsers before issue 9 were regexes that
backtrack: adjacent ``\\s*`` (``<answer>\\s*(<?)\\s*...``) split a whitespace run every possible way,
and ``<answer>(.*?)</answer>`` under ``re.search`` scans to the end from every unclosed opener, so
``temporal.score("<answer>" + " " * 100_000 + "1 to 2")`` did not return (issue 11). Each case here
has a hand-worked value and a 5 s limit: the slowest takes about 0.1 s with the linear parsers, and
the old ones run past the limit on the whitespace and repeated-opener cases.
"""

from __future__ import annotations

import pytest

from vlmlab.rewards import brats_3d, mcqa, repetition, temporal
from vlmlab.rewards.compose import Reward, RewardTerm, completion_text
from vlmlab.tasks import brats_detection, grounding, report
from vlmlab.tasks import mcqa as mcqa_task
from vlmlab.tasks.grounding import TemporalFormat
from vlmlab.tasks.numbers import finite_number

N = 200_000
LIMIT = pytest.mark.timeout(5)


def times(piece: str) -> str:
    """``piece`` repeated to about N characters (whole pieces only)."""
    return piece * (N // len(piece))


SECONDS = {"timestamp": [1.0, 2.0], "duration": 10.0, "relative": False}
RELATIVE = {"timestamp": [1.0, 2.0], "duration": 10.0}  # 100 bins: 0.1 -> 1 s
TOKENS = {"timestamp": [1.0, 2.0], "duration": 10.0, "temporal_tokens": True}  # <10> -> 1 s
BRATS = {"bbox_3d": [0, 0, 0, 1, 1, 1], "peak_slice": 1, "tumor_ratio": 0.1}
BRATS_ANSWER = '<answer>{"bbox_3d": [0, 0, 0, 1, 1, 1], "peak_slice": 1, "tumor_ratio": 0.1}</answer>'
LETTER_A = {"answer_label": "A"}

# (completion, target, total). A span equal to the true (1, 2) scores 2.0: IoU 1 + overlap 0.5 + format 0.5.
TEMPORAL = [
    ("<answer>" + " " * 2_000 + "1 to 2", SECONDS, 0.0),  # the cases: no closing tag
    ("<answer>" + " " * 8_000 + "1 to 2", SECONDS, 0.0),
    ("<answer>" + " " * 100_000 + "1 to 2", SECONDS, 0.0),
    ("<answer>" + " " * 20_000, SECONDS, 0.0),
    ("<answer>" + " " * N, SECONDS, 0.0),
    ("<answer>" + " " * N + "1 to 2</answer>", SECONDS, 2.0),  # whitespace is free
    ("<answer>" + "\n\t " * (N // 3) + "1" + " " * N + "to 2 </answer>", SECONDS, 2.0),
    (times("<answer>") + "1 to 2</answer>", SECONDS, 2.0),  # the last opener counts
    (times("</answer>"), SECONDS, 0.0),
    (times("<answer></answer>"), SECONDS, 0.0),
    ("<answer>" + "1" * N + " to 2</answer>", SECONDS, 0.0),  # start overflows to inf: no span
    ("<answer>1." + "0" * N + " to 2</answer>", SECONDS, 2.0),  # 1.000... is 1
    ("<answer>1" + "." * N + " to 2</answer>", SECONDS, 0.0),
    ("<answer>" + times("1 to ") + "</answer>", SECONDS, 0.0),
    ("<answer>1 to " + "1" * N + "x</answer>", SECONDS, 0.0),
    ("<answer>" + " " * N + "0.1 to 0.2 </answer>", RELATIVE, 2.0),
    ("<answer><10>" + " " * N + "to <20></answer>", TOKENS, 2.0),
    ("<answer>" + times("<1> ") + "</answer>", TOKENS, 0.0),
    ("<" * N, TOKENS, 0.0),
    ("1" * N, SECONDS, 0.0),
    (times(".!?"), RELATIVE, 0.0),
]


@LIMIT
@pytest.mark.parametrize(("completion", "target", "total"), TEMPORAL)
def test_temporal_score(completion: str, target: dict, total: float) -> None:
    assert temporal.score(completion, target)["total"] == total


@LIMIT
def test_grounding_parsers() -> None:
    seconds = TemporalFormat(use_relative_timestamps=False)
    assert grounding.last_answer(times("<answer>")) is None
    assert grounding.last_answer(times("<answer>") + "x</answer>") == "x"
    # The last close and the last opener before it: everything between them.
    assert grounding.last_answer("<answer>y</answer>" + times("</answer>")) == "y" + times("</answer>")
    assert grounding.parse_span("<answer>" + " " * N + "1 to 2</answer>", 10.0, seconds) == (1.0, 2.0)
    assert grounding.parse_span("<answer>" + " " * N, 10.0, seconds) is None
    assert grounding.parse_span(times("<answer>") + "2 to 1</answer>", 10.0, seconds) == (2.0, 1.0)
    assert grounding.predicted_span(times("<answer>") + "2 to 1</answer>", 10.0, seconds) is None  # reversed
    clipped = grounding.read_spans("<answer>" + " " * N + "1 to 20</answer>", SECONDS)
    assert clipped == ((1.0, 10.0), (1.0, 2.0))
    assert grounding.answer_iou("<answer>" + " " * N + "1 to 2</answer>", SECONDS) == (1.0, True)
    assert grounding.answer_iou(times("<answer> "), SECONDS) == (0.0, False)


# (completion, total): accuracy 1.0 (last answer is A), format 0.5 (whole completion well formed).
MCQA = [
    ("<answer>" + " " * 20_000, 0.0),  # the case
    ("<answer>" + " " * N, 0.0),
    ("<answer>" + " " * N + "A" + " " * N + "</answer>", 1.5),
    ("<answer>(" + " " * N + "B)</answer>", 0.5),  # well formed, wrong letter
    ("<think>" + "x" * N + "</think>" + " " * N + "<answer>(a).</answer>", 1.5),
    (times("<answer>") + "A</answer>", 1.0),  # answered, but the format has nested openers
    ("<answer>A</answer>" * (N // 18), 1.0),  # answered many times: the last counts, format fails
    ("<think>" + times("<answer>") + "</think><answer>A</answer>", 1.0),  # tags inside the thinking
    ("<think>" + " " * N + "<answer>A</answer>", 1.0),  # answered, but <think> is never closed
    ("<answer>" + "A " * (N // 2) + "</answer>", 0.0),
    (times("<think>") + "<answer>A</answer>", 1.0),
    (times("</answer>"), 0.0),
    ("(" * N, 0.0),
]


@LIMIT
@pytest.mark.parametrize(("completion", "total"), MCQA)
def test_mcqa_score(completion: str, total: float) -> None:
    assert mcqa.score(completion, LETTER_A)["total"] == total


@LIMIT
def test_mcqa_parsers() -> None:
    assert mcqa_task.answer_letter("<answer>" + " " * N + "(c)" + " " * N + "</answer>") == "C"
    assert mcqa_task.answer_letter(times("<answer>")) is None
    assert mcqa_task.answer_letter("<answer>" + "(" * N + "A</answer>") is None
    assert mcqa_task.has_answer_format(" " * N + "<answer>A</answer>" + " " * N)
    assert not mcqa_task.has_answer_format("<think>" + times("</think>") + "<answer>A</answer>")
    assert not mcqa_task.has_answer_format("<think>" + " " * N + "</answer>")


# (completion, total) against BRATS. Full marks 8.5; an answer-less completion without repetition 0.5.
# Tag names are words to the n-gram check, so a tag repeated over and over is a loop.
BRATS_CASES = [
    ("</think><answer>x</answer>" * 4000, 0.0),  # the case: no <think>, "x" not JSON, "x" repeats
    ("</think><answer>x</answer>" * (N // 26), 0.0),
    ("<think>This video shows " + "a" * N + "</think>" + " " * N + BRATS_ANSWER, 8.5),
    ("<think>This video shows" + times("</think>  ") + "</answer>", 0.5),  # the keyword only
    ("<think>This video shows" + times("</think>  ") + "<answer></answer>", 1.0),  # + Seg-Zero format
    (times("<think>"), 0.0),
    (times("<answer>"), 0.0),
    (times("<think><answer>"), 0.0),
    ("<answer>" + "[" * N + "</answer>", 0.5),  # too deep for json
    ('<answer>{"peak_slice": ' + "1" * N + "}</answer>", 0.5),  # too many digits for an int
    ('<answer>{"peak_slice": 1.' + "0" * N + ', "bbox_3d": 0}</answer>', 2.0),  # peak 1.0 is exact
    ('<answer>"' + "\\" * N + "</answer>", 0.5),
    (" " * N, 0.5),
    ("a. " * (N // 3), 0.0),  # a sentence repeated
]


@LIMIT
@pytest.mark.parametrize(("completion", "total"), BRATS_CASES)
def test_brats_score(completion: str, total: float) -> None:
    assert brats_3d.score(completion, BRATS)["total"] == pytest.approx(total)


@LIMIT
def test_brats_parsers() -> None:
    assert brats_detection.first_thinking(times("<think>")) is None
    assert brats_detection.first_thinking(times("<think>") + "</think>") == times("<think>")[len("<think>") :]
    assert brats_detection.has_think_format("<think>" + times("</think> ") + "<answer></answer>")
    assert not brats_detection.has_think_format("<think>" + times("</think> ") + "</answer>")
    assert not brats_detection.has_think_format("<think>" + " " * N + "</answer>")
    assert not brats_detection.has_think_format("<think></think>" + " " * N + "<answer>")
    assert brats_detection.parse_answer(times("<answer>")) is None
    wrapped = "<answer>" + " " * N + '[{"a": 1}]' + " " * N + "</answer>"
    assert brats_detection.parse_answer(wrapped) == {"a": 1}
    assert brats_detection.parse_answer("<answer>" + "{" * N + "</answer>") is None


REPETITION = [
    ("a. " * (N // 3), 0.0),
    ("the " * (N // 4), 0.0),
    (" ".join(f"w{i}" for i in range(N // 7)), 0.5),  # all words distinct
    (". " * (N // 2), 0.5),  # no words
    (times(".!?"), 0.5),
    ("\n" * N, 0.5),
    (times("<think></answer>"), 0.0),  # "think answer think" loops
    ("x" * N, 0.5),
    ("1." * (N // 2), 0.0),  # one sentence ("1.1" has no break), but the word "1" loops
]


@LIMIT
@pytest.mark.parametrize(("completion", "total"), REPETITION)
def test_repetition_score(completion: str, total: float) -> None:
    assert repetition.score(completion)["total"] == total


@LIMIT
def test_repetition_parts() -> None:
    assert repetition.repeats_a_sentence("a. " * (N // 3))
    assert not repetition.repeats_a_sentence("the " * (N // 4))  # one long sentence
    assert repetition.repeats_an_ngram("the " * (N // 4))
    assert not repetition.repeats_a_sentence(". ".join(f"w{i}" for i in range(N // 8)))
    assert not repetition.has_repetition(" ".join(f"w{i}" for i in range(N // 7)))


@LIMIT
def test_report_numbers_and_composition() -> None:
    assert report.parse_report(" " * N + "x" + " " * N) == "x"
    assert finite_number("1" * N) is None
    assert finite_number(10**400) is None
    parts = [{"type": "text", "text": "<answer>"}] * (N // 8) + [{"type": "text", "text": "1 to 2</answer>"}]
    conversation = [{"role": "assistant", "content": parts}]
    assert completion_text(conversation) == times("<answer>") + "1 to 2</answer>"
    reward = Reward({"temporal": RewardTerm(temporal.score), "repetition": RewardTerm(repetition.score)})
    # The span is right (2.0); "answer answer answer" is a loop (0).
    assert reward([conversation], [SECONDS])[0]["total"] == 2.0
