"""Robot success reward classification: camera images of one frame and the task in; a class out.

The prompt is the configured cameras' images followed by :data:`TASK_PROMPT`; the class of a frame is
the argmax of its ``reward_bins`` vector (:func:`label_from_reward_bins`), classes being ordered
reward bins, so a distribution over them has an :func:`expected_reward` in [0, 1].

The baseline a classifier must beat is :func:`constant_label`: the targets' most frequent class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "TASK_PROMPT",
    "RobotRewardTarget",
    "constant_label",
    "expected_reward",
    "label_from_reward_bins",
    "labels_from_reward_bins",
]

TASK_PROMPT = "Task: {task}"


@dataclass(frozen=True)
class RobotRewardTarget:
    """The frame's class (its reward bin)."""

    label: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def labels_from_reward_bins(reward_bins: np.ndarray) -> np.ndarray:
    """Class of each row: argmax of the bins, 0 for all-zero bins.

    reward_bins: [N, K] (one vector a row) or [N] (one scalar a row: always class 0).
    Returns int64 [N]; -1 where a row holds a NaN or an infinity (argmax would be meaningless).
    """
    bins = np.asarray(reward_bins, dtype=np.float64)
    if bins.ndim == 1:
        bins = bins[:, None]
    if bins.ndim != 2 or bins.shape[1] == 0:
        raise ValueError(f"reward_bins must be [N] or [N, K>0], got shape {tuple(np.shape(reward_bins))}")
    labels = np.where((bins != 0).any(axis=1), bins.argmax(axis=1), 0).astype(np.int64)
    labels[~np.isfinite(bins).all(axis=1)] = -1
    return labels


def label_from_reward_bins(reward_bins: Any) -> int:
    """The class of one frame: argmax of a 1-D ``reward_bins``; 0 for a scalar or all-zero vector.

    e.g. ``[0, 0, 1, 0] -> 2``, ``[0, 0, 0, 0] -> 0``, ``0.7 -> 0``. Raises ValueError for a
    non-finite value or a rank above 1.
    """
    bins = np.asarray(reward_bins.numpy() if isinstance(reward_bins, torch.Tensor) else reward_bins)
    if bins.ndim > 1:
        raise ValueError(f"reward_bins must be a scalar or a 1-D vector, got shape {bins.shape}")
    label = int(labels_from_reward_bins(bins.reshape(1, -1))[0])
    if label < 0:
        raise ValueError(f"reward_bins holds a NaN or an infinity: {bins.tolist()}")
    return label


def constant_label(targets: Sequence[Mapping[str, Any]]) -> int:
    """The class to predict for every frame: the most frequent ``label`` of the targets (the lowest
    among equally frequent ones). Raises ValueError without targets or for a label that is not an int."""
    labels = [t.get("label") if isinstance(t, Mapping) else None for t in targets]
    if not labels or any(isinstance(v, bool) or not isinstance(v, int) for v in labels):
        raise ValueError(f"a constant class needs targets with integer labels, got {labels[:8]!r}")
    counts = Counter(labels)
    return min(counts, key=lambda label: (-counts[label], label))


def expected_reward(probabilities: torch.Tensor) -> torch.Tensor:
    """``[..., C]`` class probabilities -> ``[...]`` reward in [0, 1]: ``sum_c p_c * c / (C - 1)``
    (classes are ordered reward bins; 0 with a single class)."""
    classes = probabilities.shape[-1]
    if classes < 2:
        return torch.zeros(probabilities.shape[:-1], dtype=probabilities.dtype, device=probabilities.device)
    values = torch.arange(classes, dtype=probabilities.dtype, device=probabilities.device) / (classes - 1)
    return (probabilities * values).sum(-1)
