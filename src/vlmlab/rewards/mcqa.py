"""The seed-004 reward for medical multiple-choice VQA: the answer letter, and the answer format.

The model answers ``<think>...</think><answer>X</answer>`` (:data:`vlmlab.data.mcqa.ANSWER_FORMAT_INSTRUCTION`);
``target`` is an MCQA sample's target ``{"answer_label": "B", "options", "dataset_name", ...}``.

============  ======  =======================================================================
component     weight  rule (value with weight 1)
============  ======  =======================================================================
``accuracy``  1.0     the letter of the last ``<answer>...</answer>`` equals ``answer_label``
``format``    0.5     the whole completion (stripped) is ``<think>T</think><answer>X</answer>``
                      or ``<answer>X</answer>``: whitespace between the parts allowed, ``T``
                      without ``<think>``/``<answer>`` tags, ``X`` one letter as below
============  ======  =======================================================================

Definitions:

* The letter: the text inside the tags, stripped, is one letter, optionally followed by ``.`` or
  in parentheses: ``B``, ``b``, ``B.``, ``(B)``, ``B)``, ``(B).``; compared case-insensitively with
  ``answer_label``. ``B. the option text`` or ``The answer is B`` is not an answer (it would let
  the model hedge in words).
* The last ``<answer>`` counts, so a completion that answers twice is judged on its final word
  (and fails ``format``).
* ``format`` weighs 0.5: half of ``accuracy``, so a well-formed wrong answer never outscores a
  correct one, while a malformed answer (unreadable by the evaluator) is still penalised.
* A malformed target (no ``answer_label``, or one that is not a single letter) scores 0 on
  ``accuracy`` and never raises; ``format`` does not depend on the target.

Weights: ``weights`` overrides some of :data:`DEFAULT_WEIGHTS`; each component is its value in
{0, 1} times its weight.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vlmlab.rewards.compose import merge_weights

__all__ = ["DEFAULT_WEIGHTS", "MAX_TOTAL", "answer_letter", "score"]

DEFAULT_WEIGHTS: dict[str, float] = {"accuracy": 1.0, "format": 0.5}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())  # 1.5

_LETTER = r"\(?\s*([A-Za-z])\s*\)?\s*\.?"
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_LETTER_ONLY = re.compile(_LETTER)
# The thinking may hold anything but another think/answer tag (one thought, one answer).
_FORMAT = re.compile(
    rf"(?:<think>(?:(?!</?think>|</?answer>).)*</think>\s*)?<answer>\s*{_LETTER}\s*</answer>", re.DOTALL
)


def answer_letter(completion: str) -> str | None:
    """The upper-case letter in the last ``<answer>...</answer>`` of ``completion``, or None. Never raises."""
    if not isinstance(completion, str):
        return None
    answers = _ANSWER.findall(completion)
    if not answers:
        return None
    match = _LETTER_ONLY.fullmatch(answers[-1].strip())
    return match.group(1).upper() if match else None


def _label(target: Mapping[str, Any]) -> str | None:
    label = target.get("answer_label")
    if not isinstance(label, str):
        return None
    label = label.strip()
    return label.upper() if len(label) == 1 and label.isascii() and label.isalpha() else None


def score(
    completion: str, target: Mapping[str, Any], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``accuracy`` and ``format`` (weighted) and ``"total"`` for one completion.

    completion: the model's text. target: ``{"answer_label": "A".."E", ...}`` (a non-dict counts as
    empty). weights: overrides of :data:`DEFAULT_WEIGHTS`. Never raises on any completion or
    target; raises ValueError only for invalid ``weights``.
    """
    effective = merge_weights(DEFAULT_WEIGHTS, weights)
    text = completion if isinstance(completion, str) else ""
    target = target if isinstance(target, Mapping) else {}
    letter, label = answer_letter(text), _label(target)
    values = {
        "accuracy": 1.0 if letter is not None and letter == label else 0.0,
        "format": 1.0 if _FORMAT.fullmatch(text.strip()) else 0.0,
    }
    out = {name: values[name] * effective[name] for name in DEFAULT_WEIGHTS}
    out["total"] = sum(out.values())
    return out
