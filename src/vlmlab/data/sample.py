"""The one sample contract every data source yields (docs/design.md, "One sample contract")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sample:
    """One example, whatever its source.

    id: unique within its dataset.
    messages: Qwen chat turns *without* the answer; vision items carry decoded pixels:
        ``{"type": "video", "video": uint8 [T, H, W, 3], "fps": float}`` or
        ``{"type": "image", "image": PIL.Image}``.
    target: task ground truth used by rewards and metrics.
    answer: assistant text for SFT.
    label: class index for reward classification.
    metadata: everything else worth keeping (source file, row, unknown keys).
    """

    id: str
    messages: list[dict[str, Any]]
    target: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    label: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
