"""The GRPO LightningModule on the tiny model: rollouts, vision encoded once, references, a short fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from vlmlab.data.collate import PromptCollator
from vlmlab.data.mcqa import MCQADataModule
from vlmlab.data.synthetic.mcqa import write as write_mcqa
from vlmlab.models.backbone import BackboneSpec, vision_tower
from vlmlab.models.lora import LoRASettings
from vlmlab.modules.generation import GenerationSettings
from vlmlab.modules.grpo import GRPOModule, GRPOSettings
from vlmlab.modules.optim import OptimSettings
from vlmlab.rewards.compose import Reward, RewardTerm
from vlmlab.rewards.mcqa import score as mcqa_score
from vlmlab.rl.grpo import policy_loss


class LengthReward:
    """A toy reward with variance from the first step: longer completions score more."""

    def __call__(self, completions: list[str], targets: list[dict]) -> list[dict[str, float]]:
        return [{"length": min(len(c), 40) / 40, "total": min(len(c), 40) / 40} for c in completions]


@pytest.fixture(scope="module")
def mcqa_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mcqa")
    write_mcqa(root, num_train=8, num_val=4, num_test=4, size=56)
    return root


def make_module(lora: bool = True, **grpo) -> GRPOModule:
    spec = BackboneSpec(
        family="qwen2_5_vl",
        tiny=True,
        dtype="float32",
        min_pixels=784,
        max_pixels=3136,
        lora=LoRASettings(r=4, alpha=8, dropout=0.0) if lora else None,
    )
    settings = GRPOSettings(
        **{"num_generations": 4, "beta": 0.04, "log_completions_every_n_steps": 1, **grpo}
    )
    return GRPOModule(
        spec,
        OptimSettings(lr=1e-3, warmup_ratio=0.0),
        GenerationSettings(max_new_tokens=12, do_sample=True),
        settings,
        reward=LengthReward(),
    )


def make_data(root: Path, module: GRPOModule, batch_size: int = 2) -> MCQADataModule:
    return MCQADataModule(root=str(root), collator=PromptCollator(module.processor), batch_size=batch_size)


def fit(module: GRPOModule, data: MCQADataModule, tmp_path: Path, steps: int, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        **kwargs,
    )
    trainer.fit(module, datamodule=data)
    return trainer


def test_rollout_groups_completions_and_scores_them(mcqa_root: Path) -> None:
    module = make_module()
    data = make_data(mcqa_root, module)
    data.setup("fit")
    batch = data.collator.train([data.datasets["train"][i] for i in range(2)])
    rollout = module.rollout(batch)
    assert rollout.completion_ids.shape[0] == 8 and rollout.ids == [batch.ids[0]] * 4 + [batch.ids[1]] * 4
    assert rollout.advantages.shape == (8,) and rollout.ref_logps.shape == rollout.completion_ids.shape
    assert torch.allclose(rollout.advantages.view(2, 4).mean(1), torch.zeros(2), atol=1e-5)
    assert rollout.old_logps is None  # num_iterations = 1: the loss uses detached current log-probs
    # The policy pass reproduces the sampling distribution's log-probs for the sampled tokens: with
    # LoRA B = 0 the policy equals the reference, so KL starts at exactly 0.
    policy = module.sequence_logps(rollout)
    mask = rollout.completion_mask.bool()
    assert torch.allclose(policy[mask], rollout.ref_logps[mask], atol=1e-5)
    # Independently: a plain full forward from pixels, no logits_to_keep, no cached vision.
    full = batch.prompt_inputs
    rows = [0, 0, 0, 0, 1, 1, 1, 1]
    from vlmlab.models.vision import item_counts, placeholder_ids, reorder_inputs

    inputs = reorder_inputs(full, item_counts(full, placeholder_ids(module.model)), rows)
    p = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], rollout.completion_ids], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], rollout.completion_mask.long()], 1)
    inputs["mm_token_type_ids"] = torch.cat(
        [inputs["mm_token_type_ids"], torch.zeros_like(rollout.completion_ids)], 1
    )
    with torch.no_grad():
        logits = module.model(**inputs).logits[:, p - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(policy[mask], expected[mask], atol=1e-4)


@pytest.mark.parametrize("num_iterations", [1, 2])
def test_vision_tower_runs_once_per_prompt_per_step(
    num_iterations: int, mcqa_root: Path, tmp_path: Path
) -> None:
    module = make_module(num_iterations=num_iterations)
    calls: list[int] = []  # vision items (images) encoded by each tower call

    def count(_module: torch.nn.Module, args: tuple, kwargs: dict, _output: object) -> None:
        calls.append(int(kwargs["grid_thw"].shape[0]))

    vision_tower(module.model).register_forward_hook(count, with_kwargs=True)
    data = make_data(mcqa_root, module)
    fit(module, data, tmp_path, steps=2)
    # Each step: one tower call encoding the 2 prompts' images once, shared by 4 rollouts each and
    # by the policy, old and reference passes. With num_iterations=2 the second step reuses it.
    assert len(calls) == (2 if num_iterations == 1 else 1)
    assert all(1 <= items <= 4 for items in calls)  # 2 prompts of 1-2 images, not x 4 rollouts


def test_reference_is_the_adapter_free_backbone_or_a_frozen_copy() -> None:
    lora = make_module(lora=True)
    assert lora.reference is None
    full = make_module(lora=False)
    assert full.reference is not None and not any(p.requires_grad for p in full.reference.parameters())
    assert not any(p.requires_grad for p in vision_tower(full.model).parameters())
    no_kl = make_module(lora=False, beta=0.0)
    assert no_kl.reference is None


def test_grpo_requires_a_reward() -> None:
    spec = BackboneSpec(family="qwen2_5_vl", tiny=True, dtype="float32")
    with pytest.raises(ValueError, match="reward=<name>"):
        GRPOModule(spec, OptimSettings(), GenerationSettings(), GRPOSettings(), reward={})


@pytest.mark.slow
def test_short_fit_logs_rewards_and_updates_the_policy(mcqa_root: Path, tmp_path: Path) -> None:
    module = make_module(lora=False, loss_type="dapo", epsilon_high=0.28)
    module.reward = Reward([RewardTerm(mcqa_score)])
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    trainer = fit(module, make_data(mcqa_root, module), tmp_path, steps=2)
    metrics = trainer.callback_metrics
    for key in (
        "train/reward/total",
        "train/reward/accuracy",
        "train/reward/format",
        "train/kl",
        "train/clip_ratio_region",
        "train/completion_length",
        "train/frac_zero_std_groups",
        "train/advantage_std",
    ):
        assert key in metrics, key
    changed = [
        n for n, p in module.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert changed or float(metrics["train/frac_zero_std_groups"]) == 1.0  # no signal, no update


def test_sequence_level_ratios_reach_the_loss(mcqa_root: Path) -> None:
    # GSPO: the module's loss is policy_loss at importance_sampling_level="sequence", and it differs from
    # the token level once the ratios differ from 1 (old log-probs shifted per token).
    with pytest.raises(ValueError, match="importance_sampling_level"):
        GRPOSettings(importance_sampling_level="sentence")
    module = make_module(importance_sampling_level="sequence", num_iterations=2)
    data = make_data(mcqa_root, module)
    data.setup("fit")
    rollout = module.rollout(data.collator.train([data.datasets["train"][i] for i in range(2)]))
    rollout.advantages = torch.linspace(-1.0, 1.0, rollout.advantages.shape[0])
    shift = 0.3 * torch.randn(rollout.completion_ids.shape, generator=torch.Generator().manual_seed(0))
    rollout.old_logps = module.sequence_logps(rollout).detach() + shift
    loss, _ = module._policy_loss(rollout)
    logps = module.sequence_logps(rollout)
    kwargs = dict(loss_type="grpo", beta=0.04, max_completion_length=12, context=module.step_context())
    args = (logps, rollout.old_logps, rollout.ref_logps, rollout.advantages, rollout.completion_mask)
    sequence, _ = policy_loss(*args, importance_sampling_level="sequence", **kwargs)
    token, _ = policy_loss(*args, importance_sampling_level="token", **kwargs)
    assert loss.item() == pytest.approx(sequence.item(), abs=1e-6)
    assert abs(sequence.item() - token.item()) > 1e-4
