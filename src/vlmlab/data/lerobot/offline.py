"""lerobot's own ``LeRobotDataset``, made never to download.

Kept apart so that importing :mod:`vlmlab.data.lerobot` does not import lerobot (seconds of
torchvision); :func:`vlmlab.data.lerobot.local.open_local_dataset` imports it when it opens a folder.
"""

from __future__ import annotations

from typing import Any

from lerobot.datasets.lerobot_dataset import LeRobotDataset

__all__ = ["LocalLeRobotDataset"]


class LocalLeRobotDataset(LeRobotDataset):
    """LeRobotDataset that never downloads: lerobot pulls missing files from the hub, we report them."""

    def pull_from_repo(self, allow_patterns: Any = None, ignore_patterns: Any = None) -> None:
        raise FileNotFoundError(
            f"{self.root}: local files are missing or incomplete ({allow_patterns or 'data'}); "
            "vlmlab reads local LeRobot datasets only"
        )
