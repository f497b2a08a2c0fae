"""Medical multiple-choice VQA: the images, a question and lettered options; the answer is one letter.

Prompt (user turn): the images, then :func:`format_prompt`: the question, one ``"X. option"`` line per
shown option, and :data:`ANSWER_FORMAT_INSTRUCTION`. The SFT answer (:func:`format_answer`) is
``<think>{reasoning}</think><answer>{label}</answer>`` when the row has a reasoning and just
``<answer>{label}</answer>`` when it has none: the instruction always asks for the thinking, but a
target without one teaches the letter alone rather than invented reasoning.

Reading an answer (reward and metrics alike, linear time):

* the letter (:func:`answer_letter`): the text inside the LAST ``<answer>...</answer>``, stripped, is
  one letter, optionally followed by ``.`` or in parentheses: ``B``, ``b``, ``B.``, ``(B)``, ``B)``,
  ``(B).``; compared case-insensitively with ``answer_label``. ``B. the option text`` or ``The answer
  is B`` is not an answer (it would let the model hedge in words);
* the format (:func:`has_answer_format`): the whole completion (stripped) is
  ``<think>T</think><answer>X</answer>`` or ``<answer>X</answer>``, whitespace between the parts
  allowed, ``T`` without think/answer tags, ``X`` a letter as above.

The baseline a model must beat is :func:`constant_answer`: the targets' most frequent letter.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ANSWER_FORMAT_INSTRUCTION",
    "OPTION_LETTERS",
    "MCQATarget",
    "answer_letter",
    "constant_answer",
    "format_answer",
    "format_prompt",
    "has_answer_format",
    "parse_options",
    "present_options",
    "target_label",
]

OPTION_LETTERS = ("A", "B", "C", "D", "E")
ANSWER_FORMAT_INSTRUCTION = (
    "Answer with the letter of the correct option. First think step by step inside <think> </think> tags, "
    "then write only the letter inside <answer> </answer> tags, e.g. <think>...</think><answer>A</answer>."
)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# Applied to whitespace-collapsed text: bounded backtracking, so linear.
_LETTER = re.compile(r"\(? ?([A-Za-z]) ?\)? ?\.?")


@dataclass(frozen=True)
class MCQATarget:
    """The correct ``answer_label`` (a letter of the shown ``options``), the options shown, and the
    row's source benchmark (``dataset_name``) and index in it (for per-dataset accuracy)."""

    answer_label: str
    options: dict[str, str]
    dataset_name: str
    dataset_index: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_options(value: Any) -> dict[str, str | None]:
    """The options of a row as a dict; a JSON string of a dict is decoded. Raises ValueError."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"not a dict and not a JSON object string ({error.msg})") from error
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict {{A..E: str}}, got {type(value).__name__}")
    # An Arrow struct carries every key seen in the file, so an unknown key is only an error if it is set.
    unknown = sorted(str(k) for k, v in value.items() if k not in OPTION_LETTERS and v not in (None, ""))
    if unknown:
        raise ValueError(f"unknown option letter(s) {', '.join(unknown)}; expected A..E")
    for letter, text in value.items():
        if text is not None and not isinstance(text, str):
            raise ValueError(f"option {letter} is {type(text).__name__}, expected a string or None")
    return value


def present_options(options: Mapping[str, str | None]) -> dict[str, str]:
    """The options to show, in letter order: missing, None and blank ones are skipped."""
    return {
        k: options[k].strip()  # type: ignore[union-attr]
        for k in OPTION_LETTERS
        if isinstance(options.get(k), str) and options[k].strip()  # type: ignore[union-attr]
    }


def format_prompt(question: str, options: Mapping[str, str | None]) -> str:
    """The text of the user turn: question, one ``"A. text"`` line per shown option, the instruction.

    e.g. ``"What colour is the lesion?\\nA. red\\nB. blue\\n" + ANSWER_FORMAT_INSTRUCTION``.
    """
    lines = [question.strip(), *(f"{k}. {v}" for k, v in present_options(options).items())]
    return "\n".join([*lines, ANSWER_FORMAT_INSTRUCTION])


def format_answer(answer_label: str, reasoning: str | None = None) -> str:
    """The SFT target: ``<think>R</think><answer>X</answer>``, or ``<answer>X</answer>`` without reasoning."""
    answer = f"<answer>{answer_label}</answer>"
    if reasoning is not None and reasoning.strip():
        return f"<think>{reasoning.strip()}</think>{answer}"
    return answer


def constant_answer(targets: Sequence[Mapping[str, Any]]) -> str:
    """The answer to give for every question: the most frequent ``answer_label`` of the targets (the
    earliest letter among equally frequent ones), written by :func:`format_answer` without reasoning.

    Raises ValueError without targets or for a target whose label is not one letter.
    """
    labels = [target_label(t) for t in targets]
    if not labels or None in labels:
        raise ValueError(f"a constant MCQA answer needs targets with one-letter labels, got {labels!r}")
    counts = Counter(labels)
    return format_answer(min(counts, key=lambda letter: (-counts[letter], letter)))


def _letter(inner: str) -> str | None:
    match = _LETTER.fullmatch(" ".join(inner.split()))
    return match.group(1).upper() if match else None


def answer_letter(completion: str) -> str | None:
    """The upper-case letter in the last ``<answer>...</answer>`` of ``completion``, or None. Never raises."""
    if not isinstance(completion, str):
        return None
    end = completion.rfind("</answer>")
    start = completion.rfind("<answer>", 0, end) if end >= 0 else -1
    return None if start < 0 else _letter(completion[start + len("<answer>") : end])


def has_answer_format(completion: str) -> bool:
    """Whether the whole (stripped) completion is ``[<think>T</think>]<answer>X</answer>`` (module docstring)."""
    text = completion.strip() if isinstance(completion, str) else ""
    if not text.endswith("</answer>"):
        return False
    start = 0
    if text.startswith("<think>"):
        close = text.find("</think>", len("<think>"))
        if close < 0 or any(tag in text[len("<think>") : close] for tag in _TAGS):
            return False
        start = close + len("</think>")
        while start < len(text) and text[start].isspace():
            start += 1
    end = len(text) - len("</answer>")
    if not text.startswith("<answer>", start) or start + len("<answer>") > end:
        return False
    return _letter(text[start + len("<answer>") : end]) is not None


def target_label(target: Mapping[str, Any]) -> str | None:
    """The upper-case ``answer_label`` of a target when it is one ASCII letter, else None."""
    label = target.get("answer_label") if isinstance(target, Mapping) else None
    if not isinstance(label, str):
        return None
    label = label.strip()
    return label.upper() if len(label) == 1 and label.isascii() and label.isalpha() else None
