"""Reward properties (issue 11): any text scores in range; 100,000 adversarial characters take < 50 ms.

Each family (``mcqa``, ``temporal``, ``brats_3d``, ``repetition``) and each composed reward of
``conf/reward/*.yaml`` is called on

* 12,000 generated strings (seeded: tags, digits, whitespace, JSON fragments, letters, unicode and
  whole well-formed answers; 2,000 for a configured reward): no call raises, every component is in
  [0, its weight], the total in [0, max_total] and equal to the components' sum;
* 100,000-character adversarial strings (whitespace runs, nested and repeated tags, long numbers,
  JSON nesting, repeated and distinct words): the fastest of 3 calls takes under 50 ms (the fastest,
  because a loaded 2-core machine slows single calls); the slowest take about 25 ms there.

The repetition reward's checks, which work on the whole text at once, also give the answers of the
rule's plain statement (one sentence, one n-gram at a time) on generated strings.
"""

from __future__ import annotations

import importlib
import itertools
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers import CONF
from vlmlab.rewards import brats_3d, mcqa, repetition, temporal
from vlmlab.rewards.compose import Reward, merge_weights

N = 100_000
LIMIT_S = 0.05
GENERATED = 12_000
# A configured reward's term is a Hydra partial, whose every call Hydra's target policy checks (about
# 1 ms, a scan of sys.modules): the first 2,000 strings there; its families get all of them.
GENERATED_CONFIGURED = 2_000

BRATS = {"bbox_3d": [0, 0, 0, 1, 1, 1], "peak_slice": 1, "tumor_ratio": 0.1}
SECONDS = {"timestamp": [1.0, 2.0], "duration": 10.0, "relative": False}
TARGETS: dict[str, Mapping[str, Any]] = {
    "mcqa": {"answer_label": "A"},
    "temporal": SECONDS,
    "brats_3d": BRATS,
    "repetition": {},
}
ODD_TARGETS: list[Any] = [
    None,
    {},
    3,
    {"answer_label": 7, "timestamp": "x", "bbox_3d": [1, 2], "duration": -1.0},
]

# Score = (completion, target) -> components and total; maxima = component -> its weight.
Family = tuple[Callable[[str, Any], dict[str, float]], dict[str, float], float]


def _family(module: Any) -> Family:
    return module.score, dict(module.DEFAULT_WEIGHTS), module.MAX_TOTAL


def _configured(name: str) -> Family:
    """The reward of ``conf/reward/<name>.yaml``, with each component's weight and the max total."""
    reward: Reward = instantiate(OmegaConf.load(CONF / "reward" / f"{name}.yaml"))
    maxima: dict[str, float] = {}
    for prefix, term in reward.terms:
        defaults = importlib.import_module(f"vlmlab.rewards.{term.family}").DEFAULT_WEIGHTS
        for component, weight in merge_weights(defaults, term.weights).items():
            maxima[f"{prefix}/{component}" if prefix else component] = weight
    return (lambda text, target: reward.score_one(text, target)), maxima, reward.max_total


FAMILIES: dict[str, Family] = {
    "mcqa": _family(mcqa),
    "temporal": _family(temporal),
    "brats_3d": _family(brats_3d),
    "repetition": _family(repetition),
    **{f"conf/{name}": _configured(name) for name in ("mcqa", "temporal", "brats_3d")},
}


def _target(family: str) -> Mapping[str, Any]:
    return TARGETS[family.removeprefix("conf/")]


# ------------------------------------------------------------------------------ generated strings

FRAGMENTS = [
    "<think>", "</think>", "<answer>", "</answer>", "<answer", "</", "<", ">", "<THINK>",
    " ", "   ", "\n", "\n\n", "\t", "\u00a0", "\x85", ". ", "! ", "?", ".", ",", "-", "(", ")",
    "0", "1", "2", "1.5", "-3", "1e9", "9" * 40, " to ", "1 to 2", "0.1 to 0.5", "<10> to <20>", "2 to 1",
    "{", "}", "[", "]", ":", '"', "\\", '{"bbox_3d": [', "0, 0, 0, 1, 1, 1", '"peak_slice": 1',
    '"tumor_ratio": 0.1', "NaN", "null", "true",
    "A", "b", "(c)", "E.", "x", "the", "the the", "This video shows", "a tumour", "B. blue",
    "é", "中文", "💊", "Σ", "İ", "\x00", "\ud800",
    "<think>This video shows a tumour.</think>", "<answer>A</answer>", "<answer>1 to 2</answer>",
    '<answer>{"bbox_3d": [0, 0, 0, 1, 1, 1], "peak_slice": 1, "tumor_ratio": 0.1}</answer>',
]  # fmt: skip


def generated(count: int = GENERATED, seed: int = 11) -> list[str]:
    """``count`` strings of 0-24 fragments or random code points (fixed seed); one in five is put in
    the ``<think>...</think><answer>...</answer>`` frame, so that strict formats are reached too."""
    rng = random.Random(seed)

    def noise(most: int) -> str:
        pieces = range(rng.randrange(most))
        return "".join(
            rng.choice(FRAGMENTS) if rng.random() < 0.85 else chr(rng.randrange(0x110000)) for _ in pieces
        )

    texts = []
    for i in range(count):
        texts.append(
            f"<think>{noise(6)}</think>{noise(2)}<answer>{noise(4)}</answer>" if i % 5 == 0 else noise(25)
        )
    return texts


TEXTS = generated()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generated_strings_score_in_range(family: str) -> None:
    score, maxima, max_total = FAMILIES[family]
    targets = [_target(family), *ODD_TARGETS]
    best = dict.fromkeys(maxima, 0.0)
    for i, text in enumerate(TEXTS[:GENERATED_CONFIGURED] if family.startswith("conf/") else TEXTS):
        # The family's own target for most strings; odd targets (None, wrong types) for the rest.
        target = targets[0] if i % 4 else targets[1 + (i // 4) % len(ODD_TARGETS)]
        result = score(text, target)
        assert list(result) == [*maxima, "total"], text
        for component, weight in maxima.items():
            assert 0.0 <= result[component] <= weight, (component, text, target)
            best[component] = max(best[component], result[component])
        assert 0.0 <= result["total"] <= max_total, text
        assert result["total"] == pytest.approx(sum(result[c] for c in maxima)), text
    # The strings reach every component's full weight at least once: the generator is not all noise.
    assert best == maxima


# ------------------------------------------------------------------------------ repetition, as stated


def repeats_a_sentence(text: str) -> bool:
    """The sentence rule one sentence at a time (the implementation before issue 11)."""
    seen: set[str] = set()
    for piece in re.split(r"(?<=[.!?])\s+|\n+|</?(?:think|answer)>", text):
        sentence = " ".join(piece.split()).lower().rstrip(".!?").strip()
        if re.search(r"\w", sentence):
            if sentence in seen:
                return True
            seen.add(sentence)
    return False


def repeats_an_ngram(text: str, n: int, max_count: int) -> bool:
    """The n-gram rule one n-gram at a time (the implementation before issue 11)."""
    words = [word.lower() for word in re.findall(r"\w+", text)]
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return any(count > max_count for count in counts.values())


# Sentence ends, every kind of whitespace, and letters whose lower case depends on their neighbours.
SENTENCE_FRAGMENTS = [
    *FRAGMENTS, "  ", "\r\n", ". .", " .", "..", "!?", "a", "A", "the", "The", "ΑΣ", "ς", "σ",
    "'", "\u0301", "\u0307", "\u00ad", "_", "think", "<answer", "/", "x y z ",
    *(c for c in map(chr, range(0x3100)) if c.isspace()),
]  # fmt: skip


def test_repetition_checks_match_the_rule() -> None:
    rng = random.Random(12)
    texts = TEXTS + ["".join(rng.choices(SENTENCE_FRAGMENTS, k=rng.randrange(20))) for _ in range(GENERATED)]
    for text in texts:
        assert repetition.repeats_a_sentence(text) == repeats_a_sentence(text), text
        for n, max_count in ((1, 1), (2, 2), (3, 2), (4, 1)):
            assert repetition.repeats_an_ngram(text, n, max_count) == repeats_an_ngram(text, n, max_count), (
                text
            )
    # A long text of few words: its n-grams (n = 30) are too many to number in 64 bits, so tuples count.
    words = " ".join(rng.choices("abcdefghij", k=5_000))
    for n in (3, 30):
        assert repetition.repeats_an_ngram(words, n, 2) == repeats_an_ngram(words, n, 2)


# ------------------------------------------------------------------------------ 100,000 characters


def fill(piece: str, prefix: str = "", suffix: str = "") -> str:
    """``prefix`` + ``piece`` repeated + ``suffix``, about N characters (whole pieces only)."""
    return prefix + piece * ((N - len(prefix) - len(suffix)) // len(piece)) + suffix


LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789"


def de_bruijn(k: int, n: int) -> list[int]:
    """A de Bruijn sequence over ``range(k)``: each run of ``n`` symbols occurs in it once (cyclically)."""
    a = [0] * k * n
    sequence: list[int] = []

    def extend(t: int, p: int) -> None:
        if t > n:
            if n % p == 0:
                sequence.extend(a[1 : p + 1])
            return
        a[t] = a[t - p]
        extend(t + 1, p)
        for j in range(a[t - p] + 1, k):
            a[t] = j
            extend(t + 1, t)

    extend(1, 1)
    return sequence


# 46,656 one-letter words and no 3-gram twice: the repetition reward must count every 3-gram.
DE_BRUIJN = [LETTERS[i] for i in de_bruijn(len(LETTERS), 3)]
# CJK and Hangul letters: distinct one-letter words without case (each line a new sentence).
LETTER_BLOCKS = ((0x4E00, 0xA000), (0xAC00, 0xD7A4), (0x20000, 0x2A6E0))
DISTINCT_LETTERS = "".join(chr(c) for lo, hi in LETTER_BLOCKS for c in range(lo, hi))
BRATS_ANSWER = '<answer>{"bbox_3d": [0, 0, 0, 1, 1, 1], "peak_slice": 1, "tumor_ratio": 0.1}</answer>'

ADVERSARIAL: dict[str, str] = {
    # whitespace runs
    "spaces": " " * N,
    "newlines": "\n" * N,
    "mixed_whitespace": fill(" \t\n\r\x0b\x0c\u00a0\u2028"),
    "answer_spaces_unclosed": fill(" ", "<answer>", "1 to 2"),
    "answer_spaces_closed": fill(" ", "<answer>", "1 to 2</answer>"),
    "answer_letter_spaces": fill(" ", "<answer>", "A</answer>"),
    "think_spaces_answer": fill(" ", "<think>This video shows", "</think>" + BRATS_ANSWER),
    # nested and repeated tags
    "openers": fill("<answer>"),
    "closers": fill("</answer>"),
    "pairs": fill("<answer></answer>"),
    "nested": "<answer>" * (N // 17) + "</answer>" * (N // 17),
    "nested_think": "<think>" * (N // 16) + "</think>" * (N // 16) + "<answer>A</answer>",
    "think_openers": fill("<think>"),
    "think_answer_openers": fill("<think><answer>"),
    "answers_repeated": fill("<answer>A</answer>"),
    "brats_issue": fill("</think><answer>x</answer>"),
    "tags_in_thinking": fill("<answer>", "<think>", "</think><answer>A</answer>"),
    "closers_in_thinking": fill("</think>  ", "<think>This video shows", "<answer></answer>"),
    "angles": "<" * N,
    "half_tags": fill("</answer"),
    # long numbers
    "digits": "1" * N,
    "long_start": fill("1", "<answer>", " to 2</answer>"),
    "long_decimal": fill("0", "<answer>1.", " to 2</answer>"),
    "long_end": fill("9", "<answer>0 to ", "</answer>"),
    "long_token": fill("1", "<answer><", "> to <2></answer>"),
    "long_exponent": fill("9", "<answer>1e", " to 2</answer>"),
    "long_json_int": fill("1", '<answer>{"peak_slice": ', "}</answer>"),
    "long_json_decimal": fill("0", '<answer>{"peak_slice": 1.', ', "bbox_3d": 0}</answer>'),
    "long_json_list": fill("1, ", '<answer>{"bbox_3d": [', "1]}</answer>"),
    "dotted_digits": fill("1."),
    # JSON nesting and escapes
    "brackets": fill("[", "<answer>", "</answer>"),
    "braces": fill("{", "<answer>", "</answer>"),
    "backslashes": fill("\\", '<answer>"', "</answer>"),
    "json_keys": fill('{"a": ', "<answer>", "</answer>"),
    # repeated and distinct words (the repetition reward's work: sentences and word 3-grams)
    "same_word": fill("the "),
    "same_sentence": fill("a. "),
    "four_words": fill("foo bar baz qux "),
    "word_lines": fill("a\n"),
    "distinct_words": " ".join(f"w{i}" for i in range(N // 6))[:N],
    "distinct_sentences": ". ".join(f"w{i}" for i in range(N // 7))[:N],
    "distinct_letter_lines": "\n".join(DISTINCT_LETTERS[: N // 2]),
    "de_bruijn_words": " ".join(DE_BRUIJN),
    "de_bruijn_lines": "".join(" ".join(DE_BRUIJN[i : i + 3]) + "\n" for i in range(0, len(DE_BRUIJN), 3)),
    "distinct_triple_lines": "".join(" ".join(t) + "\n" for t in itertools.product(LETTERS, repeat=3))[:N],
    "unicode_words": fill("é ü 中文 Σ "),
    "punctuation": fill(".!?"),
}


def fastest_of_3(score: Callable[[str, Any], dict[str, float]], text: str, target: Any) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        score(text, target)
        best = min(best, time.perf_counter() - start)
    return best


def test_adversarial_strings_are_100k() -> None:
    assert all(0.9 * N <= len(text) <= N for text in ADVERSARIAL.values())


@pytest.mark.timeout(10)  # a quadratic parser would run for minutes; fail instead
@pytest.mark.parametrize("case", list(ADVERSARIAL))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_adversarial_100k_under_50ms(family: str, case: str) -> None:
    score, _, _ = FAMILIES[family]
    seconds = fastest_of_3(score, ADVERSARIAL[case], _target(family))
    assert seconds < LIMIT_S, f"{family} on {case}: {seconds * 1000:.1f} ms"
