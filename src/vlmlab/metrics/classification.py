"""Reward classification metrics (the robot reward recipe): accuracy, macro-F1 and the confusion matrix (torchmetrics),
and a matplotlib figure of the confusion matrix for TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.figure
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from vlmlab.tasks.robot_reward import constant_label


class ClassificationMetrics(torch.nn.Module):
    """Scores class predictions against labels. Keys of :meth:`compute`: ``accuracy`` (micro: correct
    / total) and ``f1_macro`` (unweighted mean of per-class F1 over the classes present in labels or
    predictions); :meth:`confusion_matrix` gives counts ``[C, C]`` (rows: true class, columns: predicted).

    Logged as ``{stage}/{group}/{name}``, e.g. ``val/classify/accuracy``.
    """

    constant_answer = staticmethod(constant_label)  # the task's best input-independent class

    group = "classify"

    def __init__(self, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        # torchmetrics' multiclass metrics need at least 2 classes; one class is always right.
        classes = max(2, num_classes)
        self.metrics = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(classes, average="micro"),
                "f1_macro": MulticlassF1Score(classes, average="macro"),
            }
        )
        self.matrix = MulticlassConfusionMatrix(classes)

    def update(self, logits_or_preds: torch.Tensor, labels: torch.Tensor) -> None:
        """logits_or_preds: ``[B, C]`` scores (argmax taken) or ``[B]`` class indices; labels: ``[B]``."""
        preds = logits_or_preds.argmax(-1) if logits_or_preds.ndim == 2 else logits_or_preds
        preds, labels = preds.detach().long(), labels.detach().long()
        self.metrics.update(preds, labels)
        self.matrix.update(preds, labels)

    def compute(self) -> dict[str, float]:
        scores = self.metrics.compute()
        return {name: float(value) for name, value in scores.items()}

    def confusion_matrix(self) -> torch.Tensor:
        """int64 ``[C, C]``: ``[i, j]`` counts samples of true class i predicted as j."""
        matrix = self.matrix.compute().long()
        return matrix[: self.num_classes, : self.num_classes]

    def reset(self) -> None:
        self.metrics.reset()
        self.matrix.reset()

    def update_constant(self, answer: int, targets: Sequence[Mapping[str, Any]]) -> None:
        """Count class ``answer`` as the prediction for every one of ``targets`` (the constant baseline)."""
        classes = [int(t["label"]) for t in targets]
        labels = torch.tensor(classes, dtype=torch.long, device=self.matrix.device)  # [N]
        self.update(torch.full_like(labels, int(answer)), labels)


def confusion_matrix_figure(
    matrix: torch.Tensor, class_names: Sequence[str] | None = None, title: str = "confusion matrix"
) -> matplotlib.figure.Figure:
    """A heat map of a ``[C, C]`` count matrix (rows true, columns predicted), each cell annotated with
    its count; rows are also shaded by their fraction so that rare classes stay readable."""
    counts = matrix.detach().cpu().long()
    size = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(size)]
    if len(names) != size:
        raise ValueError(f"{len(names)} class names for a {size}x{size} confusion matrix")
    fractions = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)
    # A pyplot-free Figure on an Agg canvas: no display needed, no global figure registry to leak into.
    figure = matplotlib.figure.Figure(figsize=(1.2 + 0.6 * size, 1.0 + 0.6 * size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(fractions.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(size):
        for j in range(size):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            axes.text(j, i, str(int(counts[i, j])), ha="center", va="center", color=colour, fontsize=8)
    axes.set_xticks(range(size), names, rotation=45, ha="right")
    axes.set_yticks(range(size), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.tight_layout()
    return figure


__all__ = ["ClassificationMetrics", "confusion_matrix_figure"]
