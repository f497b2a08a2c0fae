"""3D report generation: a volume (as video) and an instruction in; a free-text report out.

The instruction comes with the data (the user turn of each row); the answer is the report itself, so
reading an answer is only stripping it. The target (:class:`ReportTarget`) is the reference report,
scored by BLEU and ROUGE-L (:mod:`vlmlab.metrics.report`).

The baseline a model must beat is :func:`constant_answer`: the medoid report of the targets, the one
with the highest mean ROUGE-L against all of them (:func:`rouge_l`, the metric's own tokenisation).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ReportTarget", "constant_answer", "lcs_length", "parse_report", "rouge_l", "rouge_tokens"]

# torchmetrics' ROUGE normaliser: lower case, anything but letters and digits splits words.
_NOT_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ReportTarget:
    """The reference report of one case."""

    report: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_report(completion: str) -> str:
    """The report a completion gives: its text, stripped (anything is a report)."""
    return completion.strip() if isinstance(completion, str) else ""


def rouge_tokens(text: str) -> list[str]:
    """The words ROUGE compares: lower case, split at anything that is not a letter or a digit."""
    return _NOT_WORD.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists.

    Bit-parallel (Hyyrö 2004): one bit a token of ``a``, a few integer operations a token of ``b``, so
    scoring every candidate report against every target stays fast on a validation split.
    """
    if not a or not b:
        return 0
    matches: dict[str, int] = {}
    for i, token in enumerate(a):
        matches[token] = matches.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full  # a 0 bit marks a position of a that ends a longer common subsequence
    for token in b:
        kept = row & matches.get(token, 0)
        row = ((row + kept) | (row - kept)) & full
    return len(a) - row.bit_count()


def rouge_l(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F-measure of two token lists (:func:`rouge_tokens`): ``2PR / (P + R)`` with ``P`` and
    ``R`` the LCS length over the prediction's and the reference's length; 0 when either is empty."""
    lcs = lcs_length(prediction, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def constant_answer(targets: Sequence[Mapping[str, Any]], max_candidates: int = 64) -> str:
    """The best report to give for every case: the medoid of the targets' reports.

    Candidates are the ``max_candidates`` most frequent distinct reports (first seen first among
    equals); the answer is the one with the highest mean :func:`rouge_l` over all targets, the more
    frequent on a tie. It is at least as good as the most frequent report on ROUGE-L whenever that
    report is a candidate (always, as the candidates are taken by frequency). Raises ValueError
    without targets.
    """
    reports = [str(t["report"]) for t in targets]
    if not reports:
        raise ValueError("a constant report needs at least one target")
    candidates = [report for report, _ in Counter(reports).most_common(max_candidates)]
    references = [rouge_tokens(r) for r in reports]

    def mean_score(candidate: str) -> float:
        tokens = rouge_tokens(candidate)
        return sum(rouge_l(tokens, reference) for reference in references) / len(references)

    # max keeps the first of equal scores: the more frequent candidate.
    return max(candidates, key=mean_score)
