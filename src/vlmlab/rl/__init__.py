"""Pure GRPO maths (advantages, policy loss, masks, log-probs) and the rollout container.

Orchestration (generation, rewards, logging) lives in :mod:`vlmlab.modules`; nothing here touches a
model, a process group or Lightning.
"""

from vlmlab.rl.grpo import (
    LOSS_TYPES,
    PolicyLossStats,
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
from vlmlab.rl.rollout import Rollout

__all__ = [
    "LOSS_TYPES",
    "PolicyLossStats",
    "Rollout",
    "StepContext",
    "completion_mask",
    "dapo_gradient_scale",
    "group_advantages",
    "group_reward_std",
    "micro_batches",
    "policy_loss",
    "token_logps",
    "zero_std_fraction",
]
