"""DAPO dynamic sampling: which groups are kept, how gathered parts combine into one loss, and the
module gathering prompts over steps until an update is full."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_grpo_module import fit, make_data, make_module
from vlmlab.data.synthetic.mcqa import write as write_mcqa
from vlmlab.rl.dynamic_sampling import informative_groups, part_weights
from vlmlab.rl.grpo import StepContext, policy_loss


def test_informative_groups_are_those_whose_rewards_disagree() -> None:
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 0.5, 0.5, 0.5000001])  # G = 3
    assert informative_groups(rewards, 3) == [1, 2]
    assert informative_groups(torch.zeros(6), 3) == []


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_weighted_part_losses_are_the_loss_of_the_joined_batch(loss_type: str) -> None:
    """Two parts (2 and 4 rows, different lengths) combined with part_weights give policy_loss of the
    rows stacked into one batch (dapo: each part normalised alone, as the DeepSpeed fallback)."""
    torch.manual_seed(0)
    C = 5
    logps = torch.randn(6, C, dtype=torch.float64, requires_grad=True)
    old = logps.detach() + 0.1 * torch.randn(6, C, dtype=torch.float64)
    advantages = torch.randn(6, dtype=torch.float64)
    mask = torch.ones(6, C)
    mask[0, 3:] = 0
    mask[4, 1:] = 0
    kwargs = {"loss_type": loss_type, "max_completion_length": C}
    joined, _ = policy_loss(logps, old, None, advantages, mask, **kwargs)
    parts = [slice(0, 2), slice(2, 6)]
    results = [policy_loss(logps[p], old[p], None, advantages[p], mask[p], **kwargs) for p in parts]
    weights = part_weights(loss_type, [2, 4], [float(s.num_tokens) for _, s in results])
    combined = sum(w * loss for w, (loss, _) in zip(weights, results, strict=True))
    torch.testing.assert_close(combined, joined)


def test_summed_dapo_parts_add_up() -> None:
    """Deferred dapo: each part's loss is its masked sum (normaliser 1), so the parts simply add."""
    logps = torch.randn(4, 3, dtype=torch.float64)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)
    mask = torch.ones(4, 3)
    context = StepContext(num_items_in_batch=1.0)
    joined, _ = policy_loss(logps, None, None, advantages, mask, loss_type="dapo", context=context)
    parts = [policy_loss(logps[p], None, None, advantages[p], mask[p], loss_type="dapo", context=context)
             for p in (slice(0, 1), slice(1, 4))]  # fmt: skip
    assert part_weights("dapo", [1, 3], [3.0, 9.0], summed=True) == [1.0, 1.0]
    torch.testing.assert_close(parts[0][0] + parts[1][0], joined)
    assert part_weights("bnpo", [1, 1], [0.0, 0.0]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="loss_type"):
        part_weights("ppo", [1], [1.0])


class FirstPromptOnly:
    """Rewards that disagree only within the first prompt of every batch of 2 (the second's group
    is constant): each loader batch yields one informative group, so an update needs two batches."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, completions: list[str], targets: list[dict]) -> list[dict[str, float]]:
        self.calls += 1
        G = len(completions) // 2
        scores = [float(k) for k in range(G)] + [1.0] * G
        return [{"total": s} for s in scores]


def test_settings_refuse_reused_rollouts() -> None:
    from vlmlab.modules.grpo import GRPOSettings

    with pytest.raises(ValueError, match="num_iterations=1"):
        GRPOSettings(dynamic_sampling=True, num_iterations=2)


@pytest.mark.slow
def test_module_gathers_informative_groups_over_steps(tmp_path: Path) -> None:
    root = tmp_path / "mcqa"
    write_mcqa(root, num_train=8, num_val=2, num_test=2, size=56)
    module = make_module(dynamic_sampling=True, max_prompt_draws=3, beta=0.0, num_generations=2)
    module.reward = FirstPromptOnly()
    logged: list[dict[str, float]] = []
    original = module.log_dict

    def spy(values, *args, **kwargs):  # what the module logs each step
        logged.append({k: float(v) for k, v in values.items()})
        return original(values, *args, **kwargs)

    module.log_dict = spy  # type: ignore[method-assign]
    before = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    fit(module, make_data(root, module, batch_size=2), tmp_path, steps=4)
    updates = [d for d in logged if "train/dynamic_sampling/extra_prompts" in d]
    assert module.reward.calls == 4
    # Steps 1, 3 draw (one informative group each); steps 2, 4 update with 2 groups, 2 extra prompts.
    assert [d["train/dynamic_sampling/groups"] for d in updates] == [2.0, 2.0]
    assert [d["train/dynamic_sampling/extra_prompts"] for d in updates] == [2.0, 2.0]
    assert all(d["train/frac_zero_std_groups"] == 0.5 for d in logged if "train/frac_zero_std_groups" in d)
    after = [p.detach() for p in module.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
