"""Dynamic sampling (DAPO): train only on prompt groups whose rewards disagree.

A group whose G completions all earn the same reward has zero advantage everywhere, so it adds no
gradient, only noise to the normalisation. DAPO drops such groups and draws more prompts until the
batch holds as many informative groups as it had prompts. The module gathers the groups over
several training steps (one loader batch each) and trains once it has enough; the loss of the
gathered parts must then equal the loss of one batch made of them (:func:`part_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["informative_groups", "part_weights"]


def informative_groups(rewards: Tensor, num_generations: int) -> list[int]:
    """Indices of the groups whose rewards are not all equal.

    rewards: [B * G] in group order (p0 x G, p1 x G, ...). Equal means max - min == 0 exactly: a
    group's rewards are computed by one deterministic function, so ties are exact.
    """
    grouped = rewards.view(-1, num_generations)  # [B, G]
    spread = grouped.max(dim=1).values - grouped.min(dim=1).values  # [B]
    return torch.nonzero(spread > 0).flatten().tolist()


def part_weights(
    loss_type: str, num_sequences: Sequence[int], num_tokens: Sequence[float], summed: bool = False
) -> list[float]:
    """Weights ``w_p`` such that ``sum_p w_p * loss_p`` is the loss of all parts taken as one batch,
    where ``loss_p`` is :func:`vlmlab.rl.grpo.policy_loss` of part ``p`` alone.

    num_sequences / num_tokens: the rows and the loss tokens of each part.
    grpo (mean of per-sequence means) and dr_grpo (sum / (N * L)) weigh parts by rows, bnpo (mean
    over tokens) by tokens; dapo by tokens, or 1 when ``summed`` (each part's loss is already a plain
    masked sum, normalised later over the whole step).
    """
    if loss_type in ("grpo", "dr_grpo"):
        total = float(sum(num_sequences))
        return [n / total for n in num_sequences]
    if loss_type == "dapo" and summed:
        return [1.0] * len(num_sequences)
    if loss_type in ("bnpo", "dapo"):
        total = float(sum(num_tokens))
        return [t / total if total > 0 else 0.0 for t in num_tokens]
    raise ValueError(f"unknown loss_type {loss_type!r}")
