"""A reward for not looping: repeated sentences and repeated word n-grams (max 0.5).

Sampled completions of a small or young policy degenerate into loops ("largest in frames largest in
frames ..."), stutters ("the the the the") and copied sentences. A loop rarely repeats a whole
sentence, so a sentence check alone pays it in full; a word n-gram check catches it.

==================  ======  ===================================================================
component           weight  rule (points with the default weight)
==================  ======  ===================================================================
``non_repetition``  0.5     0.5 unless :func:`has_repetition`: some sentence occurs twice, or some
                            run of :data:`NGRAM` words occurs :data:`MAX_NGRAM_COUNT` + 1 times
==================  ======  ===================================================================

Definitions:

* *Sentences* end at ``.``/``!``/``?`` followed by whitespace (so ``1.5`` stays whole), at line
  breaks and at the ``<think>``/``<answer>`` tags; they are compared lower-cased, with whitespace
  collapsed and a final ``.!?`` removed; pieces without a letter or digit (``"-"``, ``"{"``) are
  ignored.
* *Words* are runs of letters and digits, lower-cased (``re`` ``\\w+``), across sentences and tags.
  An n-gram is :data:`NGRAM` consecutive words (overlapping). Normal prose repeats a three-word phrase
  now and then ("of the tumour"), so twice is allowed; a loop repeats its phrase again and again.
* Both checks run in time linear in the length of the text (one pass, hashed n-grams).

``score(completion, target, weights)`` follows the family API of :mod:`vlmlab.rewards.compose`, so
it composes with any task's reward (``conf/reward/*.yaml``); ``target`` is ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from vlmlab.rewards.compose import merge_weights

__all__ = ["DEFAULT_WEIGHTS", "MAX_NGRAM_COUNT", "MAX_TOTAL", "NGRAM", "has_repetition", "score"]

DEFAULT_WEIGHTS: dict[str, float] = {"non_repetition": 0.5}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())
NGRAM = 3
MAX_NGRAM_COUNT = 2

# Sentence boundaries: . ! ? followed by whitespace (so "1.5" stays whole), line breaks, and the tags.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+|</?(?:think|answer)>")
_WORD = re.compile(r"\w+")


def repeats_a_sentence(text: str) -> bool:
    """Whether any sentence of ``text`` occurs twice (module docstring, "Sentences")."""
    seen: set[str] = set()
    for piece in _SENTENCE_BREAK.split(text):
        sentence = " ".join(piece.split()).lower().rstrip(".!?").strip()
        if not _WORD.search(sentence):
            continue
        if sentence in seen:
            return True
        seen.add(sentence)
    return False


def repeats_an_ngram(text: str, n: int = NGRAM, max_count: int = MAX_NGRAM_COUNT) -> bool:
    """Whether some run of ``n`` words occurs more than ``max_count`` times in ``text``."""
    if n < 1 or max_count < 1:
        raise ValueError(f"need n >= 1 and max_count >= 1, got n={n}, max_count={max_count}")
    words = [word.lower() for word in _WORD.findall(text)]
    counts: Counter[tuple[str, ...]] = Counter()
    for start in range(len(words) - n + 1):
        gram = tuple(words[start : start + n])
        counts[gram] += 1
        if counts[gram] > max_count:
            return True
    return False


def has_repetition(text: str) -> bool:
    """Whether ``text`` repeats a sentence or loops on a word n-gram (module docstring)."""
    return repeats_a_sentence(text) or repeats_an_ngram(text)


def score(
    completion: str, target: Mapping[str, Any] | None = None, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``{"non_repetition": w or 0, "total": ...}`` for one completion (``target`` is not used).

    Never raises on any completion; raises ValueError only for invalid ``weights``.
    """
    effective = merge_weights(DEFAULT_WEIGHTS, weights)
    text = completion if isinstance(completion, str) else ""
    out = {"non_repetition": 0.0 if has_repetition(text) else effective["non_repetition"]}
    out["total"] = sum(out.values())
    return out
