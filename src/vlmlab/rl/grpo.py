"""Pure GRPO maths: group-relative advantages, the clipped policy loss, completion masks, token log-probs.

Every function matches TRL 1.16's ``GRPOTrainer`` numerically on the same inputs (tested against TRL's
own code in ``tests/test_grpo_trl_parity.py``). Shapes: ``B`` prompts, ``G`` generations per prompt,
``N = B * G`` sequences in group order (p0, p0, ..., p1, p1, ...), ``C`` completion tokens, ``L``
sequence positions, ``V`` vocabulary.

Nothing here knows about Lightning, models or processes: the caller passes the distributed sizes
(``num_processes``, ``accumulation_steps``) and the global token count where a loss needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

AdvantageScale = Literal["group", "batch", "none"]
LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
ImportanceSamplingLevel = Literal["token", "sequence"]
IMPORTANCE_SAMPLING_LEVELS: tuple[str, ...] = ("token", "sequence")
# Added to the reward std before dividing, as TRL does, so a group of equal rewards gives 0, not NaN.
STD_EPSILON = 1e-4


def _nanstd(x: Tensor, dim: int | None = None) -> Tensor:
    """Standard deviation ignoring NaNs with Bessel's correction (n - 1); NaN where fewer than 2 values.

    The same sequence of operations as TRL's ``nanstd`` so results agree to the last bits.
    """
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    std = torch.sqrt(variance * correction)
    return std.squeeze() if dim is None else std.squeeze(dim)


def _check_groups(rewards: Tensor, num_generations: int) -> None:
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(
            f"{rewards.numel()} rewards do not split into groups of num_generations={num_generations}"
        )


def group_reward_std(rewards: Tensor, num_generations: int) -> Tensor:
    """Per-sequence std of its group's rewards (unbiased, NaN-aware), [B*G] -> [B*G]; zeros when G = 1."""
    _check_groups(rewards, num_generations)
    if num_generations == 1:
        return torch.zeros_like(rewards)
    std = _nanstd(rewards.view(-1, num_generations), dim=1)  # [B]
    return std.repeat_interleave(num_generations, dim=0)  # [B*G]


def group_advantages(rewards: Tensor, num_generations: int, scale: AdvantageScale = "group") -> Tensor:
    """Group-relative advantages, exactly as TRL 1.16 (``multi_objective_aggregation="sum_then_normalize"``).

    rewards: [B*G] total reward of each completion, groups contiguous (p0 x G, p1 x G, ...). NaN marks an
        unscorable completion: it is left out of its group's mean and std and gets advantage 0.
    scale: how ``reward - group mean`` is divided:
        "group": by the group's std (unbiased, n - 1) + 1e-4 (GRPO);
        "batch": by the std of all B*G rewards (unbiased) + 1e-4; the mean is still the group's;
        "none": not divided (Dr. GRPO).
    Returns [B*G].
    """
    _check_groups(rewards, num_generations)
    grouped = rewards.view(-1, num_generations)  # [B, G]
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations, dim=0)  # [B*G]
    advantages = rewards - mean  # [B*G]
    if scale == "group":
        advantages = advantages / (group_reward_std(rewards, num_generations) + STD_EPSILON)
    elif scale == "batch":
        std = _nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = advantages / (std + STD_EPSILON)
    elif scale != "none":
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return torch.nan_to_num(advantages, nan=0.0)


def zero_std_fraction(rewards: Tensor, num_generations: int) -> Tensor:
    """Fraction of completions whose group has equal rewards (no learning signal); TRL's
    ``frac_reward_zero_std``. rewards [B*G] -> scalar."""
    std = group_reward_std(rewards, num_generations)
    return torch.isclose(std, torch.zeros_like(std)).float().mean()


def completion_mask(
    completion_ids: Tensor,
    eos_token_id: int | Sequence[int],
    mask_truncated: bool = False,
    pad_token_id: int | None = None,
) -> Tensor:
    """Loss mask of generated tokens, as TRL builds it: 1 up to and including the first EOS, 0 after.

    completion_ids: [N, C] generated tokens (anything after the first EOS, e.g. padding, is ignored).
    eos_token_id: one id or several (the chat's end of turn and end of text).
    mask_truncated: a completion that never emitted EOS (cut by ``max_new_tokens``) gets an all-0 row,
        so a half-written answer is neither rewarded nor punished token by token (DAPO).
    pad_token_id: TRL also counts a completion as finished when its last token is the pad id; pass the
        tokenizer's pad id to reproduce that exactly (only matters when the model emitted it itself).
    Returns [N, C] int64.
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    n, c = completion_ids.shape
    device = completion_ids.device
    if c == 0:
        return torch.zeros(n, 0, dtype=torch.long, device=device)
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=device))  # [N, C]
    has_eos = is_eos.any(dim=1)  # [N]
    # Index of the first EOS, or C (one past the end) for a completion without one.
    eos_idx = torch.full((n,), c, dtype=torch.long, device=device)
    eos_idx[has_eos] = is_eos.int().argmax(dim=1)[has_eos]
    positions = torch.arange(c, device=device).expand(n, -1)  # [N, C]
    mask = (positions <= eos_idx.unsqueeze(1)).long()  # [N, C]
    if mask_truncated:
        finished = has_eos
        if pad_token_id is not None:
            finished = finished | (completion_ids[:, -1] == pad_token_id)
        mask = mask * finished.long().unsqueeze(1)
    return mask


def token_logps(logits: Tensor, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each token under ``softmax(logits / temperature)``: log-softmax then gather.

    logits: [N, L, V] (already shifted: position t scores token_ids[:, t]); token_ids: [N, L].
    temperature: the sampling temperature. TRL divides the logits by it so that the log-probs are
        those of the distribution the completions were sampled from; do the same for rollouts.
    Row by row, so the peak extra memory is one [L, V] row, never a second [N, L, V] tensor (as TRL's
    ``selective_log_softmax``; half precision goes through ``log_softmax``, which is stabler there).
    Returns [N, L] in the logits' dtype.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if logits.shape[:-1] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match token_ids {tuple(token_ids.shape)}")
    if temperature != 1.0:
        logits = logits / temperature
    index = token_ids.unsqueeze(-1)  # [N, L, 1]
    if logits.dtype in (torch.float32, torch.float64):
        selected = torch.gather(logits, dim=-1, index=index).squeeze(-1)  # [N, L]
        logsumexp = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # [N, L]
        return selected - logsumexp
    rows = [
        torch.log_softmax(row, dim=-1).gather(dim=-1, index=row_index).squeeze(-1)
        for row, row_index in zip(logits, index, strict=True)
    ]
    return torch.stack(rows)  # [N, L]


@dataclass(frozen=True)
class StepContext:
    """Where a micro-batch sits in its optimizer step.

    num_processes: ranks whose gradients are averaged. accumulation_steps: micro-batches per optimizer
    step. num_items_in_batch: loss tokens of the whole step on every rank (dapo's normaliser), when
    known before this micro-batch's backward; None: estimated from this micro-batch.
    """

    num_processes: int = 1
    accumulation_steps: int = 1
    num_items_in_batch: int | float | Tensor | None = None

    @property
    def shards(self) -> int:
        """Micro-batches of one optimizer step over all ranks."""
        return self.num_processes * self.accumulation_steps


def dapo_gradient_scale(num_items_in_batch: float, context: StepContext) -> float:
    """The factor that turns gradients of dapo losses computed with ``num_items_in_batch =
    context.shards`` (normaliser 1: each micro-batch loss is its plain masked sum) into exactly those of
    the global token mean, once the step's token count is known: ``shards / num_items_in_batch``.

    For a module that makes rollouts one micro-batch at a time, the later micro-batches' tokens are not
    known at the first backward; it defers the division to just before the optimizer step.
    """
    return context.shards / max(float(num_items_in_batch), 1.0)


@dataclass
class PolicyLossStats:
    """What TRL logs about one policy-loss call, as detached scalar tensors (token means over the mask).

    kl: mean k3 KL to the reference per token (None when no reference log-probs were given).
    clip_ratio_low: fraction of tokens with a negative advantage whose ratio fell below 1 - epsilon_low.
    clip_ratio_high: fraction of tokens with a positive advantage whose ratio rose above 1 + epsilon_high.
    clip_ratio_region: either of the two (the tokens the clip made gradient-free).
    clip_ratio_low_min / clip_ratio_high_max: min / max over sequences of the per-sequence fractions
        (sequences with no loss token are left out; NaN if none has one).
    At ``importance_sampling_level="sequence"`` with per-sequence advantages the clip is one decision per
    sequence, so the three fractions are over the N sequences, empty ones included (their ratio is 1,
    never clipped), and the per-sequence "fractions" are 0 or 1, as TRL logs them.
    num_tokens: loss tokens in this batch; weight the means by it to combine ranks or micro-batches.
    """

    kl: Tensor | None
    clip_ratio_low: Tensor
    clip_ratio_high: Tensor
    clip_ratio_region: Tensor
    clip_ratio_low_min: Tensor
    clip_ratio_high_max: Tensor
    num_tokens: Tensor


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return ((x * mask).sum() / mask.sum().clamp(min=1.0)).detach()


def _nan_extreme(per_sequence: Tensor, largest: bool) -> Tensor:
    kept = per_sequence[~torch.isnan(per_sequence)]
    if kept.numel() == 0:
        return torch.tensor(float("nan"), dtype=per_sequence.dtype, device=per_sequence.device)
    return (kept.max() if largest else kept.min()).detach()


def log_importance_weights(
    logps: Tensor, old_logps: Tensor, mask: Tensor, level: ImportanceSamplingLevel = "token"
) -> Tensor:
    """log(pi / pi_old), the log of the ratio the policy loss clips, as TRL 1.16 computes it.

    logps, old_logps: [N, C]; mask: [N, C] 1 for loss tokens (see :func:`completion_mask`).
    level: "token": one ratio per token, returns [N, C];
        "sequence" (GSPO): one ratio per sequence, the mean of its loss tokens' log ratios (the geometric
        mean of its token ratios: a sequence-level reward gets a sequence-level correction), returns
        [N, 1], broadcast to the sequence's tokens; 0 (ratio 1) for a sequence with no loss token.
    """
    log_ratio = logps - old_logps  # [N, C]
    if level == "token":
        return log_ratio
    if level == "sequence":
        weights = mask.to(log_ratio.dtype)  # [N, C]
        return ((log_ratio * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # [N, 1]
    raise ValueError(f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, got {level!r}")


def policy_loss(
    logps: Tensor,
    old_logps: Tensor | None,
    ref_logps: Tensor | None,
    advantages: Tensor,
    completion_mask: Tensor,
    loss_type: LossType = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    max_completion_length: int | None = None,
    context: StepContext = StepContext(),  # frozen: safe as a shared default
    *,
    delta: float | None = None,
    importance_sampling_level: ImportanceSamplingLevel = "token",
) -> tuple[Tensor, PolicyLossStats]:
    """Clipped GRPO objective with an optional k3 KL penalty, per TRL 1.16's ``_compute_loss``.

    logps: [N, C] log-probs of the completion tokens under the policy being trained (with grad).
    old_logps: [N, C] log-probs under the policy that sampled them, stored at generation; needed when
        one rollout feeds several optimizer steps (``num_iterations > 1``). None means "this is the
        sampling policy": ``logps.detach()`` is used, so the ratio is 1 and the gradient is that of
        ``A * logp`` (TRL's shortcut).
    ref_logps: [N, C] log-probs under the frozen reference; required when ``beta != 0``.
    advantages: [N] (or [N, C]) advantages, see :func:`group_advantages`.
    completion_mask: [N, C] 1 for tokens in the loss (see :func:`completion_mask`).
    loss_type: how the masked per-token losses are reduced to one number:
        "grpo": mean over each sequence's tokens, then mean over sequences;
        "bnpo": mean over all tokens of this batch;
        "dr_grpo": sum / (N * max_completion_length), a constant normaliser (no length bias);
        "dapo": sum / tokens of the whole global batch (see ``num_items_in_batch``).
    epsilon_low / epsilon_high: clip range [1 - low, 1 + high] of the ratio; high None = low (DAPO's
        "clip higher" sets it larger).
    beta: weight of the per-token k3 KL ``exp(ref - logp) - (ref - logp) - 1``, added to each token's loss.
    max_completion_length: dr_grpo's normaliser; default C. Pass the generation's ``max_new_tokens``
        to match TRL, which uses its config's ``max_completion_length`` whatever C is.
    context: where this micro-batch sits in its optimizer step (:class:`StepContext`); dapo divides
        by ``context.num_items_in_batch / (num_processes * accumulation_steps)`` so that, once
        Lightning divides each micro-batch loss by ``accumulate_grad_batches`` and DDP/DeepSpeed
        average gradients over ranks, the step's gradient is that of the token mean over the global
        batch, as TRL's. Without ``num_items_in_batch``: this batch's tokens times
        ``num_processes * accumulation_steps`` (every micro-batch assumed this size).
    delta: optional upper bound on the unclipped ratio (two-sided clipping, INTELLECT-2).
    importance_sampling_level: "token" (GRPO): a ratio per token, [N, C]; "sequence" (GSPO): one ratio
        per sequence, exp of the mean log ratio over its loss tokens, [N, 1], clipped as a whole so a
        sequence is kept or dropped together (see :func:`log_importance_weights`). The KL term stays per
        token. Sequence-level ratios fit ``loss_type="grpo"``; the other reductions sum tokens and so
        weight each sequence by its length (TRL warns about this too).

    Returns the loss of this micro-batch before the division by the accumulation steps (TRL's returned
    loss is this divided by ``gradient_accumulation_steps`` in training) and its statistics.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if logps.shape != completion_mask.shape:
        raise ValueError(
            f"logps {tuple(logps.shape)} and completion_mask {tuple(completion_mask.shape)} differ"
        )
    if beta != 0.0 and ref_logps is None:
        raise ValueError("beta != 0 needs ref_logps (the reference model's log-probs)")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = completion_mask.to(logps.dtype)  # [N, C]
    old_logps = logps.detach() if old_logps is None else old_logps
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # [N, 1] or [N, C]

    log_weights = log_importance_weights(logps, old_logps, mask, importance_sampling_level)
    coef_1 = torch.exp(log_weights)  # [N, C] or [N, 1] importance ratio pi / pi_old
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)  # [N, C] or [N, 1]
    if delta is not None:
        coef_1 = torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)  # [N, C] or [N, 1]

    per_token_kl = None
    if ref_logps is not None:
        # k3 estimator of KL(pi || pi_ref): unbiased, always >= 0 (Schulman).
        log_ratio_ref = ref_logps - logps  # [N, C]
        per_token_kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1  # [N, C]
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl

    masked_loss = per_token_loss * mask  # [N, C]: a sequence's loss broadcast to each of its tokens
    if loss_type == "grpo":
        loss = (masked_loss.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = masked_loss.sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        length = logps.shape[1] if max_completion_length is None else max_completion_length
        loss = masked_loss.sum() / (logps.shape[0] * length)
    else:  # dapo
        shards = context.num_processes * context.accumulation_steps
        total = mask.sum() * shards if context.num_items_in_batch is None else context.num_items_in_batch
        total = torch.as_tensor(total, dtype=logps.dtype, device=logps.device)
        loss = masked_loss.sum() / (total.clamp(min=1.0) / shards)

    is_low = (coef_1 < 1 - epsilon_low) & (advantages < 0)  # [N, C] or [N, 1]
    is_high = (coef_1 > 1 + epsilon_high) & (advantages > 0)  # [N, C] or [N, 1]
    # One clip decision per sequence counts once per sequence, empty ones too (as TRL's metrics).
    per_sequence = importance_sampling_level == "sequence" and is_low.shape[1] == 1
    clip_mask = torch.ones_like(is_low, dtype=mask.dtype) if per_sequence else mask  # [N, 1] or [N, C]
    # Per-sequence fractions divide by the raw count (NaN for an empty row), which the min/max skip.
    low_per_sequence = (is_low.float() * clip_mask).sum(-1) / clip_mask.sum(-1)  # [N]
    high_per_sequence = (is_high.float() * clip_mask).sum(-1) / clip_mask.sum(-1)  # [N]
    stats = PolicyLossStats(
        kl=None if per_token_kl is None else _masked_mean(per_token_kl, mask),
        clip_ratio_low=_masked_mean(is_low.float(), clip_mask),
        clip_ratio_high=_masked_mean(is_high.float(), clip_mask),
        clip_ratio_region=_masked_mean((is_low | is_high).float(), clip_mask),
        clip_ratio_low_min=_nan_extreme(low_per_sequence, largest=False),
        clip_ratio_high_max=_nan_extreme(high_per_sequence, largest=True),
        num_tokens=mask.sum().detach(),
    )
    return loss, stats


def micro_batches(n: int, size: int | None) -> list[slice]:
    """Row slices covering ``range(n)`` in chunks of ``size`` (the last may be smaller); one slice when
    size is None or >= n. For log-prob passes that would not fit in memory at once."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size is not None and size < 1:
        raise ValueError(f"micro-batch size must be >= 1 or None, got {size}")
    step = n if size is None else size
    return [slice(start, min(start + step, n)) for start in range(0, n, max(step, 1))]
