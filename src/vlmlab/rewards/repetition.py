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
* Both checks run in time linear in the length of the text: a few passes of str methods and regexes
  over the whole text, and n-grams numbered in numpy and counted in a hash table.

``score(completion, target, weights)`` follows the family API of :mod:`vlmlab.rewards.compose`, so
it composes with any task's reward (``conf/reward/*.yaml``); ``target`` is ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from vlmlab.rewards.compose import merge_weights

__all__ = ["DEFAULT_WEIGHTS", "MAX_NGRAM_COUNT", "MAX_TOTAL", "NGRAM", "has_repetition", "score"]

DEFAULT_WEIGHTS: dict[str, float] = {"non_repetition": 0.5}
MAX_TOTAL: float = sum(DEFAULT_WEIGHTS.values())
NGRAM = 3
MAX_NGRAM_COUNT = 2

# Sentence boundaries: . ! ? followed by whitespace (so "1.5" stays whole), line breaks, and the tags.
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_ODD_SPACE = re.compile(r"[^\S\n]{2,}|[^\S \n]")  # whitespace, no line break, but a lone space
_FINAL_STOPS = re.compile(r"\n[.!?]+ ?")  # in reversed text: a sentence's final . ! ? and the space before
_NO_WORD = re.compile(r"\n[^\w\n]+(?=\n)")  # a sentence without a letter or digit
_WORD = re.compile(r"\w+")


def repeats_a_sentence(text: str) -> bool:
    """Whether any sentence of ``text`` occurs twice (module docstring, "Sentences").

    All sentences are normalised at once, one a line, by str methods and regexes over the whole text
    (a loop per sentence took 25 ms on 100,000 characters of one-letter lines; this takes 9 ms).
    """
    for tag in _TAGS:  # a tag ends a sentence: a line break
        text = text.replace(tag, "\n")
    # Whitespace collapsed: a run is one space, or line breaks if it holds one; none at a line's ends.
    text = _ODD_SPACE.sub(" ", "\n" + text + "\n").replace(" \n", "\n").replace("\n ", "\n")
    for stop in ".!?":  # . ! ? then whitespace (now one space) end a sentence
        text = text.replace(stop + " ", stop + "\n")
    # Lower-cased (a final Σ sees a line break as the end of its sentence), then reversed so that a
    # final . ! ? follows a line break (reversed sentences repeat when sentences do); wordless dropped.
    text = _NO_WORD.sub("", _FINAL_STOPS.sub("\n", text.lower()[::-1]))
    sentences = list(filter(None, text.split("\n")))
    return len(set(sentences)) < len(sentences)


def repeats_an_ngram(text: str, n: int = NGRAM, max_count: int = MAX_NGRAM_COUNT) -> bool:
    """Whether some run of ``n`` words occurs more than ``max_count`` times in ``text``."""
    if n < 1 or max_count < 1:
        raise ValueError(f"need n >= 1 and max_count >= 1, got n={n}, max_count={max_count}")
    words = list(map(str.lower, _WORD.findall(text)))
    # A word occurs at least as often as each n-gram it starts: no frequent word, no loop.
    counts = Counter(words)
    if len(words) < n or max(counts.values()) <= max_count:
        return False
    if len(counts) ** n >= 2**63:  # too many words to number the n-grams in 64 bits: count tuples
        return max(Counter(zip(*(words[i:] for i in range(n)), strict=False)).values()) > max_count
    # Number each word (in order of first appearance) and each n-gram in base len(counts), in numpy,
    # then count the numbers in C: twice as fast as counting tuples of words.
    index = dict(zip(counts, range(len(counts)), strict=True))
    ids = np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))
    grams = ids[: len(ids) - n + 1]
    for i in range(1, n):
        grams = grams * len(counts) + ids[i : len(ids) - n + 1 + i]
    return max(Counter(grams.tolist()).values()) > max_count


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
