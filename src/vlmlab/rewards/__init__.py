"""Pure reward functions for GRPO and their weighted composition.

One module per family, each with ``score(completion, target, weights=None) -> {component: value,
..., "total": float}`` (components already weighted), ``DEFAULT_WEIGHTS`` and ``MAX_TOTAL``:

* :mod:`vlmlab.rewards.brats_3d`: 3D brain-tumour detection (the BraTS recipe, max 8.5);
* :mod:`vlmlab.rewards.temporal`: video temporal grounding (the grounding recipe, max 2.0);
* :mod:`vlmlab.rewards.mcqa`: multiple-choice VQA (the MCQA recipe, max 1.5).

:mod:`vlmlab.rewards.compose` sums families (:class:`Reward`, :class:`RewardTerm`, built by
``conf/reward/*.yaml``) and adapts them to TRL (:func:`as_trl_reward_funcs`). A score never raises
on any model output or malformed target value, and is deterministic.
"""

from vlmlab.rewards.compose import Reward, RewardTerm, as_trl_reward_funcs

__all__ = ["Reward", "RewardTerm", "as_trl_reward_funcs"]
