"""3D report generation: a volume (as video) and an instruction in; a free-text report out.

The instruction comes with the data (the user turn of each row); the answer is the report itself, so
reading an answer is only stripping it. The target (:class:`ReportTarget`) is the reference report,
scored by BLEU and ROUGE-L (:mod:`vlmlab.metrics.report`).

The baseline a model must beat is :func:`constant_answer`: the medoid report of the targets, the one
with the highest mean ROUGE-L against all of them (torchmetrics' ROUGE, as the metric).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ReportTarget", "constant_answer", "parse_report"]


@dataclass(frozen=True)
class ReportTarget:
    """The reference report of one case."""

    report: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_report(completion: str) -> str:
    """The report a completion gives: its text, stripped (anything is a report)."""
    return completion.strip() if isinstance(completion, str) else ""


def constant_answer(targets: Sequence[Mapping[str, Any]], max_candidates: int = 64) -> str:
    """The best report to give for every case: the medoid of the targets' reports.

    Candidates are the ``max_candidates`` most frequent distinct reports (first seen first among
    equals); the answer is the one with the highest mean ROUGE-L F-measure over all targets, scored by
    torchmetrics as :class:`vlmlab.metrics.report.ReportMetrics` scores (the more frequent on a tie).
    Raises ValueError without targets.
    """
    from torchmetrics.functional.text import rouge_score  # only here: tasks stay light to import

    reports = [str(t["report"]) for t in targets]
    if not reports:
        raise ValueError("a constant report needs at least one target")
    candidates = [report for report, _ in Counter(reports).most_common(max_candidates)]

    def mean_score(candidate: str) -> float:
        scores = rouge_score([candidate] * len(reports), reports, rouge_keys="rougeL")
        return float(scores["rougeL_fmeasure"])

    # max keeps the first of equal scores: the more frequent candidate.
    return max(candidates, key=mean_score)
