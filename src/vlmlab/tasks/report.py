"""3D report generation: a volume (as video) and an instruction in; a free-text report out.

The instruction comes with the data (the user turn of each row); the answer is the report itself, so
reading an answer is only stripping it. The target (:class:`ReportTarget`) is the reference report,
scored by BLEU and ROUGE-L (:mod:`vlmlab.metrics.report`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ReportTarget", "parse_report"]


@dataclass(frozen=True)
class ReportTarget:
    """The reference report of one case."""

    report: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_report(completion: str) -> str:
    """The report a completion gives: its text, stripped (anything is a report)."""
    return completion.strip() if isinstance(completion, str) else ""
