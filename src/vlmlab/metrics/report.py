"""Report generation metrics: BLEU-1, BLEU-4 and ROUGE-L (torchmetrics), shared by validation and
evaluate.py."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore, ROUGEScore

from vlmlab.metrics.constant import ScoresConstantAnswer
from vlmlab.tasks.report import constant_answer, parse_report


class ReportMetrics(ScoresConstantAnswer, torch.nn.Module):
    """Scores generated reports against the reference (``target["report"]``). Keys: ``bleu_1``,
    ``bleu_4``, ``rouge_l`` (ROUGE-L F-measure)."""

    constant_answer = staticmethod(constant_answer)  # the task's best input-independent answer

    group = "report"

    def __init__(self) -> None:
        super().__init__()
        self.metrics = MetricCollection(
            {
                "bleu_1": BLEUScore(n_gram=1),
                "bleu_4": BLEUScore(n_gram=4, smooth=True),
                "rouge_l": ROUGEScore(rouge_keys="rougeL", accumulate="best"),
            }
        )

    def update(self, predictions: list[str], targets: list[dict[str, Any]]) -> None:
        predictions = [parse_report(p) for p in predictions]
        references = [t["report"] for t in targets]
        self.metrics["bleu_1"].update(predictions, [[r] for r in references])
        self.metrics["bleu_4"].update(predictions, [[r] for r in references])
        self.metrics["rouge_l"].update(predictions, references)

    def compute(self) -> dict[str, float]:
        rouge = self.metrics["rouge_l"].compute()
        return {
            "bleu_1": float(self.metrics["bleu_1"].compute()),
            "bleu_4": float(self.metrics["bleu_4"].compute()),
            "rouge_l": float(rouge["rougeL_fmeasure"]),
        }

    def reset(self) -> None:
        self.metrics.reset()
