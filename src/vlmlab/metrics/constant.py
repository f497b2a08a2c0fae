"""What the constant-answer baseline (:mod:`vlmlab.callbacks.baseline`) asks of a metric of completions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ScoresConstantAnswer:
    """Mixin for a metric updated with ``update(completions, targets)``: subclasses set
    ``constant_answer`` to their task's function (``targets -> answer text``), and
    :meth:`update_constant` counts that one answer as the prediction for every target."""

    def update_constant(self, answer: str, targets: Sequence[Mapping[str, Any]]) -> None:
        self.update([answer] * len(targets), list(targets))  # type: ignore[attr-defined]
