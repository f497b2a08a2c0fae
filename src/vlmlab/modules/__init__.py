"""LightningModules, one per training method: sft, grpo, reward_classifier."""
