"""Medical multiple-choice VQA metrics: accuracy overall and per source dataset.

The answer letter is read exactly as the reward reads it (:func:`vlmlab.tasks.mcqa.answer_letter`: the
letter of the last ``<answer>...</answer>``); an answer without a letter is wrong and counted in
``unparsable``.

Per-dataset accuracy under DDP: ``dataset_name`` is a string and ranks may see different names, so each
sample's name is kept as UTF-8 bytes in a ``cat`` state (:func:`encode_names`, one NUL-terminated name
per sample) beside its correctness flag. torchmetrics gathers both states in rank order, so after the
sync every rank decodes the same names in the same order, computes the same keys (``log_dict`` with
``sync_dist`` needs identical keys on every rank) and needs no list of names in the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vlmlab.metrics.constant import ScoresConstantAnswer
from vlmlab.tasks.mcqa import answer_letter, constant_answer, target_label

__all__ = ["MCQAMetrics", "checked_label", "decode_names", "encode_names"]


def encode_names(names: list[str], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """``[sum(len(utf8(name)) + 1)]`` of ``dtype``: each name's UTF-8 byte values followed by a 0 (NUL)."""
    data = bytearray()
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"dataset_name must be a non-empty string without NUL, got {name!r}")
        data += name.encode("utf-8") + b"\x00"
    return torch.tensor(list(data), dtype=dtype)


def decode_names(codes: torch.Tensor) -> list[str]:
    """The names of :func:`encode_names` (any dtype holding the byte values; a gather may upcast)."""
    data = bytes(codes.detach().cpu().to(torch.uint8).tolist())
    if not data:
        return []
    if not data.endswith(b"\x00"):
        raise ValueError("encoded names must end with NUL")
    return [part.decode("utf-8") for part in data[:-1].split(b"\x00")]


def checked_label(target: Mapping[str, Any]) -> str:
    """The upper-case ``answer_label`` of an MCQA target; ValueError unless it is one ASCII letter."""
    label = target_label(target)
    if label is None:
        got = target.get("answer_label") if isinstance(target, Mapping) else target
        raise ValueError(f"target answer_label must be one letter, got {got!r}")
    return label


class MCQAMetrics(ScoresConstantAnswer, Metric):
    """Accuracy of the answer letters, overall and per ``target["dataset_name"]``.

    Keys of :meth:`compute`: ``accuracy``, ``accuracy/<dataset_name>`` for every name seen on any rank
    (sorted), ``unparsable`` (fraction without an answer letter); logged as ``{stage}/mcqa/{key}``.
    States are ``cat`` lists of per-sample values, so ``compute`` is exact across DDP ranks.
    """

    constant_answer = staticmethod(constant_answer)  # the task's best input-independent answer

    group = "mcqa"
    full_state_update = False
    higher_is_better = True

    def __init__(self) -> None:
        super().__init__()
        # Every state in the metric's float dtype: a rank without samples syncs an empty tensor of that
        # dtype, and gloo/NCCL need one dtype on all ranks (byte values 0..255 are exact in any float).
        self.add_state("correct", [], dist_reduce_fx="cat")  # 0/1 per sample
        self.add_state("parsed", [], dist_reduce_fx="cat")  # 0/1 per sample
        self.add_state("names", [], dist_reduce_fx="cat")  # NUL-terminated UTF-8 bytes, one name per sample

    def update(self, predictions: list[str], targets: list[dict[str, Any]]) -> None:
        """predictions: generated texts; targets: MCQA targets with ``answer_label`` and ``dataset_name``."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        if not predictions:
            return
        labels = [checked_label(t) for t in targets]
        names = encode_names([t.get("dataset_name") for t in targets], self.dtype)
        letters = [answer_letter(text) for text in predictions]
        correct = [float(a == b) for a, b in zip(letters, labels, strict=True)]
        parsed = [float(a is not None) for a in letters]
        self.correct.append(torch.tensor(correct, dtype=self.dtype, device=self.device))
        self.parsed.append(torch.tensor(parsed, dtype=self.dtype, device=self.device))
        self.names.append(names.to(self.device))

    def compute(self) -> dict[str, float]:
        # A list before any update, a tensor after a DDP sync (torchmetrics replaces the list).
        if isinstance(self.correct, list) and not self.correct:
            return {"accuracy": math.nan, "unparsable": math.nan}
        correct = dim_zero_cat(self.correct).double().cpu()
        if correct.numel() == 0:
            return {"accuracy": math.nan, "unparsable": math.nan}
        parsed = dim_zero_cat(self.parsed).double().cpu()
        names = decode_names(dim_zero_cat(self.names))
        if len(names) != correct.numel():
            raise RuntimeError(
                f"{len(names)} dataset names for {correct.numel()} samples (state out of step)"
            )
        out = {"accuracy": float(correct.mean())}
        for name in sorted(set(names)):
            mask = torch.tensor([n == name for n in names])
            out[f"accuracy/{name}"] = float(correct[mask].mean())
        out["unparsable"] = float(1.0 - parsed.mean())
        return out
