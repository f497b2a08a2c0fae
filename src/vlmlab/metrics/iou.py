"""What the span (temporal grounding) and box (BraTS) metrics share: one IoU per answer, its mean, and
the hit rate at each threshold m, counting a hit when ``IoU >= m``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = ["TOLERANCE", "IoUHitMetric"]

# A boundary written in decimals that lands on m up to float rounding counts as reaching it.
TOLERANCE = 1e-9


class IoUHitMetric(Metric):
    """Base class: keeps the IoU sum, the hits at each threshold and the answer count as sums
    (``dist_reduce_fx="sum"``), so ``compute`` is exact across DDP ranks. Subclasses score answers and
    call :meth:`add_ious`; :meth:`mean_iou` and :meth:`hit_rates` give NaN before any answer."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> None:
        super().__init__()
        values = [float(m) for m in thresholds]
        if not values or any(not (0.0 < m <= 1.0) for m in values) or len(set(values)) != len(values):
            raise ValueError(f"thresholds must be distinct numbers in (0, 1], got {list(thresholds)!r}")
        self.thresholds = tuple(values)
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hits", torch.zeros(len(values), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def add_ious(self, ious: Sequence[float]) -> None:
        """One IoU in [0, 1] per answer (0 for an unparsable one)."""
        values = torch.tensor(list(ious), dtype=torch.float64, device=self.device)  # [N]
        thresholds = torch.tensor(self.thresholds, dtype=torch.float64, device=self.device)  # [M]
        self.iou_sum += values.sum()
        self.hits += (values[:, None] >= thresholds[None, :] - TOLERANCE).sum(0)  # [N, M] -> [M]
        self.total += len(values)

    def mean_iou(self) -> float:
        total = int(self.total)
        return float(self.iou_sum) / total if total else math.nan

    def hit_rates(self) -> dict[float, float]:
        """Threshold m -> fraction of answers with IoU >= m."""
        total = int(self.total)
        return {
            m: hits / total if total else math.nan
            for m, hits in zip(self.thresholds, self.hits.tolist(), strict=True)
        }
