"""A whole GRPO optimizer step of the module equals TRL's ``_compute_loss`` on the same rollouts.

Two micro-steps (``accumulate_grad_batches=2``) of :class:`GRPOModule` under a real Lightning Trainer,
on two fixed rollouts of the tiny Qwen2.5-VL with stored old and reference log-probs that differ from
the policy's (so ratios clip and the KL is not zero), give the same accumulated gradient, just before
the optimizer step, as TRL 1.16's ``GRPOTrainer._compute_loss`` backpropagated through the same model
for each micro-step. For dapo TRL divides by the tokens of the whole generation batch (both
micro-steps), which the module only knows after the second micro-step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tests.test_grpo_trl_parity import FixedLogProbs, trl_trainer
from vlmlab.data.collate import PromptCollator
from vlmlab.data.sample import Sample
from vlmlab.models.backbone import BackboneSpec
from vlmlab.modules.generation import GenerationSettings
from vlmlab.modules.grpo import GRPOModule, GRPOSettings
from vlmlab.modules.optim import OptimSettings
from vlmlab.rl import Rollout

ACCUMULATION, MAX_NEW_TOKENS = 2, 6


class ConstantReward:
    def __call__(self, completions: list[str], targets: list[dict]) -> list[dict[str, float]]:
        return [{"total": 0.0} for _ in completions]


class FixedRollouts(GRPOModule):
    """Trains on the rollouts it is given, and keeps the gradients the optimizer step would apply."""

    def __init__(self, rollouts: list[Rollout], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queue = list(rollouts)
        self.step_grads: dict[str, torch.Tensor] = {}

    def rollout(self, batch: Any) -> Rollout:
        return self.queue.pop(0)

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        # Called after on_before_optimizer_step (where dapo divides), just before the step.
        self.step_grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}


def module_kwargs(loss_type: str) -> dict[str, Any]:
    spec = BackboneSpec(
        family="qwen2_5_vl", tiny=True, dtype="float32", min_pixels=784, max_pixels=3136, lora=None
    )
    return {
        "backbone": spec,
        "optim": OptimSettings(lr=1e-3, warmup_ratio=0.0),
        "generation": GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, do_sample=True, top_k=0),
        "grpo": GRPOSettings(
            num_generations=2, beta=0.04, loss_type=loss_type, logprob_micro_batch_size=None
        ),
        "reward": ConstantReward(),
    }


def prompt_batch(processor: Any, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    samples = [
        Sample(
            id=f"p{seed}_{i}",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "image": Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)),
                        },
                        {"type": "text", "text": f"Describe picture {i}."},
                    ],
                }
            ],
        )
        for i in range(2)
    ]
    return PromptCollator(processor).train(samples)


def fixed_rollouts(module: GRPOModule) -> list[Rollout]:
    """Two rollouts with old / reference log-probs moved off the policy's, advantages of both signs and
    completions of different lengths (so the two micro-steps hold different numbers of tokens)."""
    rollouts = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        rollout = GRPOModule.rollout(module, prompt_batch(module.processor, seed))
        rollout.completion_mask[: seed + 1, MAX_NEW_TOKENS - 2 * seed :] = 0  # as if those ended early
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            sampled = module.sequence_logps(rollout)
        rollout.old_logps = sampled + 0.3 * torch.randn(sampled.shape, generator=generator)
        rollout.ref_logps = sampled + 0.2 * torch.randn(sampled.shape, generator=generator)
        rollout.advantages = torch.randn(rollout.advantages.shape, generator=generator)
        rollouts.append(rollout)
    return rollouts


def trl_step_grads(module: GRPOModule, rollouts: list[Rollout], loss_type: str) -> dict[str, torch.Tensor]:
    trainer = trl_trainer(
        model=torch.nn.Module().train(),
        loss_type=loss_type,
        beta=0.04,
        epsilon_low=0.2,
        epsilon_high=0.2,
        current_gradient_accumulation_steps=ACCUMULATION,
        max_completion_length=MAX_NEW_TOKENS,
        args={"steps_per_generation": ACCUMULATION, "gradient_accumulation_steps": ACCUMULATION},
    )
    tokens = sum(r.completion_mask.sum() for r in rollouts)  # the generation batch: both micro-steps
    assert rollouts[0].completion_mask.sum() != rollouts[1].completion_mask.sum()
    module.model.zero_grad()
    for rollout in rollouts:
        inputs = {
            "prompt_ids": rollout.prompt_inputs["input_ids"],
            "prompt_mask": rollout.prompt_inputs["attention_mask"],
            "completion_ids": rollout.completion_ids,
            "completion_mask": rollout.completion_mask,
            "advantages": rollout.advantages,
            "old_per_token_logps": rollout.old_logps,
            "ref_per_token_logps": rollout.ref_logps,
            "num_items_in_batch": tokens,
        }
        trainer._compute_loss(FixedLogProbs(module.sequence_logps(rollout)), inputs).backward()
    grads = {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}
    module.model.zero_grad()
    return grads


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_a_module_step_matches_trl(loss_type: str, tmp_path: Path) -> None:
    module = FixedRollouts([], **module_kwargs(loss_type))
    rollouts = fixed_rollouts(module)
    expected = trl_step_grads(module, rollouts, loss_type)
    module.queue = rollouts
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        accumulate_grad_batches=ACCUMULATION,
        gradient_clip_val=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, train_dataloaders=DataLoader(range(ACCUMULATION), batch_size=1))
    assert set(module.step_grads) == set(expected)
    for name, grad in expected.items():
        assert torch.allclose(module.step_grads[name], grad, atol=1e-6, rtol=1e-4), name
