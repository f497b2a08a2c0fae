"""GRPO maths against values worked out by hand (TRL parity is in test_grpo_trl_parity.py)."""

from __future__ import annotations

import math

import pytest
import torch

from vlmlab.rl import (
    Rollout,
    StepContext,
    completion_mask,
    dapo_gradient_scale,
    group_advantages,
    group_reward_std,
    micro_batches,
    policy_loss,
    token_logps,
    zero_std_fraction,
)
from vlmlab.rl.grpo import LOSS_TYPES, log_importance_weights

# ---------------------------------------------------------------- advantages

# rewards [1,0,0 | 1,2,2], G=3. Group means 1/3 and 5/3; deviations (2/3,-1/3,-1/3) and (-2/3,1/3,1/3);
# both groups: sum of squares 2/3, unbiased variance 2/3 / (3-1) = 1/3, std 1/sqrt(3).
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0], dtype=torch.float64)
DEVIATIONS = torch.tensor([2 / 3, -1 / 3, -1 / 3, -2 / 3, 1 / 3, 1 / 3], dtype=torch.float64)


def test_group_advantages_group_scale_by_hand() -> None:
    expected = DEVIATIONS / (1 / math.sqrt(3) + 1e-4)
    assert torch.allclose(group_advantages(REWARDS, 3, "group"), expected, atol=1e-12)
    assert torch.allclose(
        group_reward_std(REWARDS, 3), torch.full((6,), 1 / math.sqrt(3), dtype=torch.float64)
    )


def test_group_advantages_batch_scale_uses_group_mean_and_batch_std() -> None:
    # All six rewards: mean 1, squared deviations 0,1,1,0,1,1 -> unbiased variance 4/5.
    expected = DEVIATIONS / (math.sqrt(0.8) + 1e-4)
    assert torch.allclose(group_advantages(REWARDS, 3, "batch"), expected, atol=1e-12)


def test_group_advantages_none_is_centred_only() -> None:
    assert torch.allclose(group_advantages(REWARDS, 3, "none"), DEVIATIONS, atol=1e-12)


def test_equal_rewards_give_zero_advantage_and_count_as_zero_std() -> None:
    rewards = torch.tensor([2.0, 2.0, 2.0, 0.0, 1.0, 1.0])
    advantages = group_advantages(rewards, 3)
    assert torch.equal(advantages[:3], torch.zeros(3))
    assert zero_std_fraction(rewards, 3).item() == pytest.approx(0.5)


def test_nan_reward_is_left_out_and_gets_zero_advantage() -> None:
    # Group [1, nan, 0]: mean 0.5, deviations +-0.5, unbiased variance 0.5 / (2-1).
    rewards = torch.tensor([1.0, float("nan"), 0.0], dtype=torch.float64)
    std = math.sqrt(0.5)
    expected = torch.tensor([0.5 / (std + 1e-4), 0.0, -0.5 / (std + 1e-4)], dtype=torch.float64)
    assert torch.allclose(group_advantages(rewards, 3), expected, atol=1e-12)


def test_single_generation_is_not_divided() -> None:
    rewards = torch.tensor([3.0, 1.0])
    assert torch.equal(group_advantages(rewards, 1), torch.zeros(2))


@pytest.mark.parametrize(
    ("rewards", "num_generations", "scale"),
    [(torch.zeros(5), 2, "group"), (torch.zeros(2, 3), 3, "group"), (torch.zeros(4), 2, "mean")],
)
def test_group_advantages_rejects_bad_input(rewards: torch.Tensor, num_generations: int, scale: str) -> None:
    with pytest.raises(ValueError):
        group_advantages(rewards, num_generations, scale)  # type: ignore[arg-type]


# ---------------------------------------------------------------- policy loss

# Two sequences of two loss tokens (+ one masked token), epsilon 0.2 (clip range [0.8, 1.2]).
# Ratios pi/pi_old: 1.5 and 0.5 in each row; advantages +1 and -1.
#   A=+1, r=1.5: min(1.5, 1.2) = 1.2   -> loss -1.2, clipped high (no gradient)
#   A=+1, r=0.5: min(0.5, 0.8) = 0.5   -> loss -0.5 (not counted as clipped: A > 0)
#   A=-1, r=1.5: min(-1.5, -1.2) = -1.5 -> loss 1.5
#   A=-1, r=0.5: min(-0.5, -0.8) = -0.8 -> loss 0.8, clipped low (no gradient)
OLD = torch.zeros(2, 3, dtype=torch.float64)
RATIOS = torch.tensor([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]], dtype=torch.float64)
ADVANTAGES = torch.tensor([1.0, -1.0], dtype=torch.float64)
FULL = torch.tensor([[1, 1, 0], [1, 1, 0]])


def _logps() -> torch.Tensor:
    return RATIOS.log().clone().requires_grad_(True)


def test_clipped_objective_by_hand() -> None:
    logps = _logps()
    loss, stats = policy_loss(logps, OLD, None, ADVANTAGES, FULL, "grpo", epsilon_low=0.2)
    # Row means (-1.2 - 0.5) / 2 = -0.85 and (1.5 + 0.8) / 2 = 1.15; mean 0.15.
    assert loss.item() == pytest.approx(0.15)
    loss.backward()
    # d(-r*A)/dlogp = -r*A for unclipped tokens, then / 2 tokens / 2 rows; clipped tokens get 0.
    expected_grad = torch.tensor([[0.0, -0.5 / 4, 0.0], [1.5 / 4, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(logps.grad, expected_grad)
    assert stats.clip_ratio_low.item() == pytest.approx(0.25)
    assert stats.clip_ratio_high.item() == pytest.approx(0.25)
    assert stats.clip_ratio_region.item() == pytest.approx(0.5)
    assert stats.clip_ratio_low_min.item() == 0.0  # per-row low fractions (0, 0.5)
    assert stats.clip_ratio_high_max.item() == pytest.approx(0.5)  # per-row high fractions (0.5, 0)
    assert stats.num_tokens.item() == 4
    assert stats.kl is None


def test_epsilon_high_widens_only_the_upper_bound() -> None:
    # epsilon_high 0.6: 1.5 is inside [0.8, 1.6], so the first token is unclipped (loss -1.5).
    loss, stats = policy_loss(
        _logps(), OLD, None, ADVANTAGES, FULL, "grpo", epsilon_low=0.2, epsilon_high=0.6
    )
    assert loss.item() == pytest.approx(((-1.5 - 0.5) / 2 + (1.5 + 0.8) / 2) / 2)
    assert stats.clip_ratio_high.item() == 0.0
    assert stats.clip_ratio_low.item() == pytest.approx(0.25)


def test_delta_caps_the_unclipped_ratio() -> None:
    # delta 1.3: A=-1, r=1.5 -> min(-1.3, -1.2) = -1.3 -> loss 1.3 instead of 1.5.
    loss, _ = policy_loss(_logps(), OLD, None, ADVANTAGES, FULL, "grpo", delta=1.3)
    assert loss.item() == pytest.approx(((-1.2 - 0.5) / 2 + (1.3 + 0.8) / 2) / 2)


def test_old_logps_none_means_ratio_one_and_policy_gradient() -> None:
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, stats = policy_loss(logps, None, None, torch.tensor([2.0]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(-2.0)  # -(1 * A) per token
    loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-1.0, -1.0]]))  # -A / 2 tokens
    assert stats.clip_ratio_region.item() == 0.0


def test_k3_kl_by_hand() -> None:
    # ref - logp = ln 2, 0, -ln 2 -> e^d - d - 1 = 1 - ln 2, 0, ln 2 - 1/2.
    logps = torch.zeros(1, 3, dtype=torch.float64)
    ref = torch.tensor([[math.log(2), 0.0, -math.log(2)]], dtype=torch.float64)
    kl = [1 - math.log(2), 0.0, math.log(2) - 0.5]
    loss, stats = policy_loss(
        logps, None, ref, torch.zeros(1, dtype=torch.float64), torch.ones(1, 3), beta=0.1
    )
    assert stats.kl.item() == pytest.approx(sum(kl) / 3)
    assert loss.item() == pytest.approx(0.1 * sum(kl) / 3)  # advantage 0: the loss is the KL term alone
    _, no_penalty = policy_loss(
        logps, None, ref, torch.zeros(1, dtype=torch.float64), torch.ones(1, 3), beta=0.0
    )
    assert no_penalty.kl.item() == pytest.approx(sum(kl) / 3)  # still logged with beta 0


# Masked variant: row 0 keeps both tokens, row 1 only its first. Kept token losses -1.2, -0.5 | 1.5.
PARTIAL = torch.tensor([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        ("grpo", {}, (-0.85 + 1.5) / 2),
        ("bnpo", {}, -0.2 / 3),
        ("dr_grpo", {}, -0.2 / (2 * 3)),  # default length: C = 3
        ("dr_grpo", {"max_completion_length": 10}, -0.2 / (2 * 10)),
        ("dapo", {}, -0.2 / 3),  # default: this batch's tokens
        ("dapo", {"context": StepContext(2, 2, num_items_in_batch=8)}, -0.2 / (8 / 4)),
        ("dapo", {"context": StepContext(num_items_in_batch=torch.tensor(5))}, -0.2 / 5),
    ],
)
def test_loss_normalisations_by_hand(loss_type: str, kwargs: dict, expected: float) -> None:
    loss, _ = policy_loss(_logps(), OLD, None, ADVANTAGES, PARTIAL, loss_type, **kwargs)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected)


def test_dapo_default_scales_with_processes_and_accumulation_consistently() -> None:
    # With no global count the batch is assumed typical: same loss whatever the sizes.
    base, _ = policy_loss(_logps(), OLD, None, ADVANTAGES, PARTIAL, "dapo")
    scaled, _ = policy_loss(_logps(), OLD, None, ADVANTAGES, PARTIAL, "dapo", context=StepContext(4, 3))
    assert scaled.item() == pytest.approx(base.item())


def test_deferred_dapo_normalisation_equals_the_global_token_mean() -> None:
    # Each micro-batch's loss as a plain masked sum, the gradient scaled once the step's tokens are known,
    # equals the loss normalised by the true count: 2 processes x 2 accumulation steps, 11 tokens in all.
    context = StepContext(2, 2)
    deferred = StepContext(2, 2, num_items_in_batch=context.shards)
    exact = StepContext(2, 2, num_items_in_batch=11)
    logps_a, logps_b = _logps().requires_grad_(True), _logps().requires_grad_(True)
    loss_sum, _ = policy_loss(logps_a, OLD, None, ADVANTAGES, PARTIAL, "dapo", context=deferred)
    loss_exact, _ = policy_loss(logps_b, OLD, None, ADVANTAGES, PARTIAL, "dapo", context=exact)
    assert loss_sum.item() == pytest.approx(-0.2)  # normaliser 1: the masked sum
    loss_sum.backward()
    loss_exact.backward()
    assert torch.allclose(logps_a.grad * dapo_gradient_scale(11, context), logps_b.grad)


def test_empty_sequence_counts_nowhere() -> None:
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    loss, stats = policy_loss(_logps(), OLD, None, ADVANTAGES, mask, "grpo")
    assert loss.item() == pytest.approx(-0.85 / 2)  # the empty row contributes 0 but still counts as a row
    assert stats.clip_ratio_low_min.item() == 0.0  # NaN fraction of the empty row skipped
    assert stats.clip_ratio_high_max.item() == pytest.approx(0.5)


# Sequence level (GSPO), clip range [0.8, 1.2]. Log ratios log(pi / pi_old) per token:
#   row 0, A=+1, mask [1, 1, 1]: 0.3, 0.0, 0.3   -> mean 0.2,  ratio e^0.2 = 1.2214 > 1.2: clipped high,
#       loss -min(1.2214, 1.2) = -1.2 on each token, no gradient;
#   row 1, A=-1, mask [1, 1, 0]: 0.1, -0.3, (5.0 padded, left out) -> mean -0.1, ratio e^-0.1 = 0.9048,
#       inside the range: loss -min(-0.9048, -0.9048) = +0.9048 on each kept token.
# (With the padded token the mean would be 1.6 and the ratio 4.95; per token, 0.3 would clip alone.)
SEQUENCE_LOG_RATIOS = torch.tensor([[0.3, 0.0, 0.3], [0.1, -0.3, 5.0]], dtype=torch.float64)
SEQUENCE_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
R1 = math.exp(-0.1)


def test_sequence_log_importance_weight_is_the_masked_mean() -> None:
    weights = log_importance_weights(SEQUENCE_LOG_RATIOS, OLD, SEQUENCE_MASK, "sequence")
    assert weights.shape == (2, 1)
    assert torch.allclose(weights, torch.tensor([[0.2], [-0.1]], dtype=torch.float64))
    empty = log_importance_weights(SEQUENCE_LOG_RATIOS, OLD, torch.zeros(2, 3), "sequence")
    assert torch.equal(empty, torch.zeros(2, 1, dtype=torch.float64))  # no loss token: ratio 1
    token = log_importance_weights(SEQUENCE_LOG_RATIOS, OLD, SEQUENCE_MASK, "token")
    assert torch.equal(token, SEQUENCE_LOG_RATIOS)


@pytest.mark.parametrize(
    ("loss_type", "expected", "grad_scale"),
    [
        # Row means -1.2 and +R1, mean over the 2 rows; row 1's gradient d(R1)/dlogp_t = R1 / 2 tokens / 2 rows.
        ("grpo", (-1.2 + R1) / 2, 1 / 4),
        # Token sums 3 * -1.2 + 2 * R1 over the 5 loss tokens (dapo: this batch's tokens); gradient 2 * R1/2 / 5.
        ("bnpo", (-3.6 + 2 * R1) / 5, 1 / 5),
        ("dapo", (-3.6 + 2 * R1) / 5, 1 / 5),
        ("dr_grpo", (-3.6 + 2 * R1) / (2 * 3), 1 / 6),
    ],
)
def test_sequence_level_loss_by_hand(loss_type: str, expected: float, grad_scale: float) -> None:
    logps = SEQUENCE_LOG_RATIOS.clone().requires_grad_(True)
    loss, stats = policy_loss(
        logps,
        OLD,
        None,
        ADVANTAGES,
        SEQUENCE_MASK,
        loss_type,
        importance_sampling_level="sequence",  # type: ignore[arg-type]
    )
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    expected_grad = torch.tensor([[0.0, 0.0, 0.0], [R1, R1, 0.0]], dtype=torch.float64) * grad_scale
    assert torch.allclose(logps.grad, expected_grad)
    # One clip decision per sequence: row 0 clipped high, row 1 not; fractions over the 2 sequences.
    assert stats.clip_ratio_high.item() == pytest.approx(0.5)
    assert stats.clip_ratio_low.item() == 0.0
    assert stats.clip_ratio_region.item() == pytest.approx(0.5)
    assert stats.clip_ratio_high_max.item() == 1.0
    assert stats.clip_ratio_low_min.item() == 0.0
    assert stats.num_tokens.item() == 5


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_on_policy_gradient_is_the_same_at_both_levels(loss_type: str) -> None:
    # old_logps None: every ratio is 1 at both levels, and with one advantage per sequence
    # d(mean_t ratio_t)/dlogp_t = d(ratio_seq)/dlogp_t = 1 / tokens, so each loss and gradient agree.
    generator = torch.Generator().manual_seed(0)
    values = -torch.rand(3, 4, generator=generator, dtype=torch.float64) * 2
    ref = values + 0.3 * torch.randn(3, 4, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    advantages = torch.tensor([0.7, -1.3, 0.4], dtype=torch.float64)
    results = []
    for level in ("token", "sequence"):
        logps = values.clone().requires_grad_(True)
        loss, _ = policy_loss(
            logps,
            None,
            ref,
            advantages,
            mask,
            loss_type,
            beta=0.04,
            importance_sampling_level=level,  # type: ignore[arg-type]
        )
        loss.backward()
        results.append((loss.detach(), logps.grad))
    (token_loss, token_grad), (sequence_loss, sequence_grad) = results
    assert sequence_loss.item() == pytest.approx(token_loss.item(), abs=1e-12)
    assert torch.allclose(sequence_grad, token_grad, atol=1e-12)
    assert token_grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": "ppo"}, "loss_type"),
        ({"beta": 0.04}, "ref_logps"),
        ({"completion_mask": torch.ones(2, 2)}, "completion_mask"),
        ({"importance_sampling_level": "sequence_token"}, "importance_sampling_level"),
    ],
)
def test_policy_loss_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = {"logps": _logps(), "old_logps": OLD, "ref_logps": None, "advantages": ADVANTAGES}
    arguments["completion_mask"] = FULL
    with pytest.raises(ValueError, match=message):
        policy_loss(**{**arguments, **kwargs})


# ---------------------------------------------------------------- masks

EOS, PAD = 2, 0


def test_completion_mask_ends_at_first_eos() -> None:
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0], [5, 6, 2, 0]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]])
    assert torch.equal(completion_mask(ids, EOS), expected)
    assert completion_mask(ids, EOS).dtype == torch.long


def test_mask_truncated_zeroes_completions_without_eos() -> None:
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [5, 6, 7, 0]])
    expected = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(completion_mask(ids, EOS, mask_truncated=True), expected)
    # TRL counts a completion whose last token is the pad id as finished.
    kept = completion_mask(ids, EOS, mask_truncated=True, pad_token_id=PAD)
    assert torch.equal(kept[2], torch.tensor([1, 1, 1, 1]))


def test_completion_mask_several_eos_ids() -> None:
    ids = torch.tensor([[3, 9, 2, 0], [3, 4, 5, 6]])
    assert torch.equal(completion_mask(ids, [2, 9]), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]))
    assert completion_mask(torch.zeros(2, 0, dtype=torch.long), 2, mask_truncated=True).shape == (2, 0)


# ---------------------------------------------------------------- log-probs


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logps_equals_log_softmax_gather(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator)
    ids = torch.randint(0, 11, (3, 5), generator=generator)
    expected = torch.log_softmax(logits / temperature, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_logps(logits, ids, temperature), expected, atol=1e-6)
    half = token_logps(logits.bfloat16(), ids, temperature)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), expected, atol=5e-2)


def test_token_logps_by_hand_and_gradient() -> None:
    # Two equal logits: log(1/2) each; temperature does not change a uniform distribution.
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    value = token_logps(logits, torch.tensor([[1]]), temperature=0.5)
    assert value.item() == pytest.approx(math.log(0.5))
    value.sum().backward()
    # d log softmax_1 / d z = (onehot - p) / T = (-0.5, 0.5) / 0.5.
    assert torch.allclose(logits.grad, torch.tensor([[[-1.0, 1.0]]]))


def test_token_logps_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="temperature"):
        token_logps(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="token_ids"):
        token_logps(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))


# ---------------------------------------------------------------- micro-batches


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [
        (5, 2, [slice(0, 2), slice(2, 4), slice(4, 5)]),
        (4, 2, [slice(0, 2), slice(2, 4)]),
        (3, None, [slice(0, 3)]),
        (3, 8, [slice(0, 3)]),
        (0, 2, []),
    ],
)
def test_micro_batches(n: int, size: int | None, expected: list[slice]) -> None:
    assert micro_batches(n, size) == expected


def test_micro_batches_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        micro_batches(4, 0)


# ---------------------------------------------------------------- rollout container


def _rollout(**overrides: object) -> Rollout:
    n = 4
    fields = {
        "prompt_inputs": {
            "input_ids": torch.ones(n, 2, dtype=torch.long),
            "attention_mask": torch.ones(n, 2, dtype=torch.long),
            "mm_token_type_ids": torch.tensor([[1, 0]] * n),
        },
        "completion_ids": torch.tensor([[7, 2, 0]] * n),
        "completion_mask": torch.tensor([[1, 1, 0]] * n),
        "texts": ["a"] * n,
        "rewards": torch.tensor([1.0, 0.0, 0.0, 1.0]),
        "reward_components": {"format": torch.zeros(n)},
        "advantages": torch.zeros(n),
        "num_generations": 2,
    }
    return Rollout(**{**fields, **overrides})  # type: ignore[arg-type]


def test_rollout_model_inputs_and_move() -> None:
    rollout = _rollout()
    assert rollout.num_prompts == 2
    inputs, prompt_length = rollout.model_inputs()
    assert prompt_length == rollout.prompt_inputs["input_ids"].shape[1]
    assert torch.equal(inputs["input_ids"][0], torch.tensor([1, 1, 7, 2, 0]))
    assert torch.equal(inputs["attention_mask"][0], torch.tensor([1, 1, 1, 1, 0]))
    assert torch.equal(inputs["mm_token_type_ids"][0], torch.tensor([1, 0, 0, 0, 0]))
    moved = rollout.to("cpu")
    assert moved.texts is rollout.texts and torch.equal(moved.advantages, rollout.advantages)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_generations": 3}, "num_generations"),
        ({"completion_mask": torch.ones(4, 2)}, "completion_mask"),
        ({"rewards": torch.zeros(3)}, "rewards"),
        ({"old_logps": torch.zeros(4, 2)}, "old_logps"),
        ({"texts": ["a"]}, "texts"),
        ({"reward_components": {"iou": torch.zeros(2)}}, "iou"),
    ],
)
def test_rollout_rejects_inconsistent_shapes(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _rollout(**overrides)
