"""The MCQA recipe's reward for medical multiple-choice VQA: the answer letter, and the answer format.

The model answers ``<think>...</think><answer>X</answer>`` (:data:`vlmlab.tasks.mcqa.ANSWER_FORMAT_INSTRUCTION`);
the letter and the format are read by :mod:`vlmlab.tasks.mcqa` (:func:`~vlmlab.tasks.mcqa.answer_letter`,
:func:`~vlmlab.tasks.mcqa.has_answer_format`, whose docstrings give the exact rules); ``target`` is an
:class:`~vlmlab.tasks.mcqa.MCQATarget` dict.

============  ======  =======================================================================
component     weight  rule (value with weight 1)
============  ======  =======================================================================
``accuracy``  1.0     the letter of the last ``<answer>...</answer>`` equals ``answer_label``
``format``    0.5     the whole completion is ``[<think>T</think>]<answer>X</answer>``
============  ======  =======================================================================

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

from collections.abc import Mapping
from typing import Any

from vlmlab.rewards.compose import merge_weights
from vlmlab.tasks.mcqa import answer_letter, has_answer_format, target_label

__all__ = ["DEFAULT_WEIGHTS", "MAX_TOTAL", "score"]

DEFAULT_WEIGHTS: dict[str, float] = {"accuracy": 1.0, "format": 0.5}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())  # 1.5


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
    letter, label = answer_letter(text), target_label(target)
    values = {
        "accuracy": 1.0 if letter is not None and letter == label else 0.0,
        "format": 1.0 if has_answer_format(text) else 0.0,
    }
    out = {name: values[name] * effective[name] for name in DEFAULT_WEIGHTS}
    out["total"] = sum(out.values())
    return out
