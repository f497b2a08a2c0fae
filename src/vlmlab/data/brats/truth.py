"""Ground truth of a NIfTI case from its segmentation (tumour = label > 0).

* ``bbox_3d = [x1, y1, z1, x2, y2, z2]``: voxel EDGES in NIfTI order, ``x1`` the smallest tumour
  index and ``x2`` the largest plus one.
* ``peak_slice``: the index along the slice axis of the slice with the largest tumour area (the
  lowest such index on a tie).
* ``tumor_ratio = tumour voxels / brain voxels``; a brain voxel is a voxel where at least one of the
  modalities read is non-zero, or which is tumour (so the ratio is in ``(0, 1]`` even if a
  skull-stripped scan zeroed a tumour voxel in every modality).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TumourTruth", "tumour_truth"]


@dataclass(frozen=True)
class TumourTruth:
    """Ground truth in voxels (see the module docstring for the exact definitions)."""

    bbox_3d: list[int]
    peak_slice: int
    tumor_ratio: float
    tumour_voxels: int
    brain_voxels: int


def tumour_truth(
    seg: np.ndarray, modalities: Sequence[np.ndarray], slice_axis: int = 2
) -> TumourTruth | None:
    """Box (voxel edges), peak slice and tumour/brain ratio from a segmentation ``(X, Y, Z)``.

    modalities: the ``(X, Y, Z)`` volumes defining the brain (any non-zero, or tumour).
    Returns None when there is no tumour voxel (label > 0).
    """
    tumour = np.asarray(seg) > 0
    count = int(tumour.sum())
    if count == 0:
        return None
    box_lo, box_hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(tumour.any(axis=other))
        box_lo.append(int(present[0]))
        box_hi.append(int(present[-1]) + 1)
    area = tumour.sum(axis=tuple(a for a in range(3) if a != slice_axis))
    brain = tumour.copy()
    for volume in modalities:
        brain |= np.asarray(volume) != 0
    brain_count = int(brain.sum())
    return TumourTruth(box_lo + box_hi, int(np.argmax(area)), count / brain_count, count, brain_count)
