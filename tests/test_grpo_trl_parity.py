"""Parity of vlmlab.rl with TRL 1.16's GRPOTrainer: TRL's own code runs on the same tensors.

How TRL is run without building a trainer (which would load a model, datasets and accelerate state):
the GRPOTrainer methods are called on an instance made with ``GRPOTrainer.__new__`` that carries only
the attributes those methods read (see :func:`trl_trainer`). The method bodies run unchanged:

- advantages, ``mask_truncated_completions`` and ``num_items_in_batch``: ``_generate_and_score_completions``,
  with generation replaced through ``rollout_func`` (TRL's own hook) by fixed token ids, and
  ``_calculate_rewards`` by a fixed reward matrix (rewards are inputs here, not the maths under test);
- masking after the first EOS: ``_generate_single_turn`` with a model whose ``generate`` returns fixed ids;
- the loss: ``_compute_loss`` with a model whose fused-LM-head forward returns log-probs we choose. TRL 1.16
  never sees logits: ``add_fused_lm_head`` makes the model return per-token log-probs. Loss value,
  gradient and the logged metrics are compared;
- log-probs: ``_get_per_token_logps_and_entropies`` on a tiny real Qwen2 patched by TRL's
  ``add_fused_lm_head`` at a sampling temperature, against ``token_logps`` on the plain logits, and one
  ``_compute_loss`` through that model end to end (parameter gradients compared).

Not run, because it cannot on CPU: TRL's Triton log-prob kernel (off-GPU TRL takes its chunked torch
path, which is what runs here), vLLM's importance-sampling correction, and real multi-process gathers
(the accelerator is a one-process stub; ``num_processes`` only enters dapo's normaliser arithmetic).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import trl
from trl import GRPOTrainer
from trl.distributed import DistributedBackend
from trl.trainer.utils import add_fused_lm_head

from vlmlab.rl import Rollout, StepContext, completion_mask, group_advantages, policy_loss, token_logps

EOS_IDS, PAD = [2, 9], 0
B, G = 2, 3
N = B * G


def test_trl_is_the_version_these_stubs_were_written_for() -> None:
    # The stubs below supply exactly what TRL 1.16's methods read; another version must be re-read first.
    assert trl.__version__ == "1.16.0"


class OneProcessAccelerator:
    """What the GRPOTrainer methods under test use of ``accelerate.Accelerator``, for one process."""

    def __init__(self, num_processes: int = 1) -> None:
        self.num_processes = num_processes  # only enters dapo's normaliser
        self.process_index = 0
        self.is_main_process = True
        self.device = torch.device("cpu")
        self.state = SimpleNamespace(deepspeed_plugin=None, fsdp_plugin=None)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor

    def autocast(self) -> nullcontext:
        return nullcontext()

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


class Tokenizer:
    pad_token_id = PAD

    def batch_decode(self, ids: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return [" ".join(map(str, row)) for row in ids]


class FixedGeneration(torch.nn.Module):
    """``generate`` appends fixed completions to the prompts."""

    is_gradient_checkpointing = False

    def __init__(self, completions: torch.Tensor) -> None:
        super().__init__()
        self.completions = completions

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        return torch.cat([input_ids, self.completions[: input_ids.shape[0]]], dim=1)


class FixedLogProbs(torch.nn.Module):
    """A model with TRL's fused LM head whose completion log-probs are the tensor we give it."""

    is_gradient_checkpointing = False

    def __init__(self, logps: torch.Tensor) -> None:
        super().__init__()
        self.logps = logps  # [N, C], requires grad

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        prompt = self.logps.new_zeros(input_ids.shape[0], input_ids.shape[1] - self.logps.shape[1])
        log_probs = torch.cat([prompt, self.logps], dim=1)  # TRL keeps the last C positions
        return SimpleNamespace(log_probs=log_probs, entropy=torch.zeros_like(log_probs))


def trl_trainer(args: dict[str, Any] | None = None, **attributes: Any) -> GRPOTrainer:
    """A GRPOTrainer without ``__init__``, with the attributes its generation/scoring/loss methods read."""
    trainer = GRPOTrainer.__new__(GRPOTrainer)
    defaults: dict[str, Any] = {
        # shared
        "accelerator": OneProcessAccelerator(),
        "state": SimpleNamespace(global_step=0, num_input_tokens_seen=0),
        "model": SimpleNamespace(training=True, is_gradient_checkpointing=False),
        "_metrics": {"train": defaultdict(list), "eval": defaultdict(list)},
        "use_vllm": False,
        "vllm_importance_sampling_correction": False,
        "beta": 0.0,
        # generation and scoring
        "_tokenizer": Tokenizer(),
        "processing_class": Tokenizer(),
        "eos_token_ids": EOS_IDS,
        "pad_to_multiple_of": None,
        "mask_truncated_completions": False,
        "num_generations": G,
        "num_iterations": 1,
        "environment_factories": None,
        "environments": None,
        "tools": None,
        "rollout_func": None,
        "use_transformers_continuous_batching": False,
        "generation_config": None,
        "generation_kwargs": None,
        "_is_vlm": False,
        "is_deepspeed_enabled": False,
        "multi_objective_aggregation": "sum_then_normalize",
        "scale_rewards": "group",
        "reward_weights": torch.tensor([1.0]),
        "reward_func_names": ["reward"],
        "_logs": {
            "prompt": [],
            "completion": [],
            "rewards": defaultdict(list),
            "advantages": [],
            "extra": defaultdict(list),
            "images": [],
        },
        "_pending_extra_logs": {},
        "_pending_metrics": {},
        "log_multimodal": False,
        # loss
        "loss_type": "grpo",
        "epsilon_low": 0.2,
        "epsilon_high": 0.2,
        "importance_sampling_level": "token",
        "aux_loss_enabled": False,
        "top_entropy_quantile": 1.0,
        "off_policy_mask_threshold": None,
        "_entropy_bonus_enabled": False,
        "current_gradient_accumulation_steps": 1,
        "max_completion_length": 8,
    }
    trainer_args = {
        "report_to": [],
        "device": torch.device("cpu"),
        "gradient_accumulation_steps": 1,
        "steps_per_generation": 1,
        "per_device_train_batch_size": N,
        "per_device_eval_batch_size": N,
        "gradient_checkpointing_kwargs": None,
        "ds3_gather_for_generation": True,
        "use_bias_correction_kl": False,
        "delta": None,
    }
    trainer_args.update(args or {})
    for name, value in {**defaults, **attributes, "args": SimpleNamespace(**trainer_args)}.items():
        setattr(trainer, name, value)
    trainer._dist = DistributedBackend(trainer.accelerator)
    return trainer


# ---------------------------------------------------------------- masks, advantages, token count

# Prompts p0 x 3, p1 x 3 (left-padded by TRL), completions of up to 5 tokens (EOS ids 2 and 9, pad 0):
GENERATED = torch.tensor(
    [
        [5, 2, 7, 2, 0],  # EOS at 1, junk after it
        [5, 6, 7, 8, 3],  # no EOS: truncated
        [2, 0, 0, 0, 0],  # EOS first
        [5, 6, 9, 0, 0],  # second EOS id
        [5, 6, 7, 8, 0],  # no EOS but ends in pad: TRL counts it as finished
        [4, 4, 4, 4, 4],  # truncated
    ]
)
PROMPTS = [[11, 12], [11, 12], [11, 12], [13], [13], [13]]
# Two reward components (weights 1 and 0.5); a NaN component is skipped, an all-NaN row is unscorable.
REWARD_MATRIX = torch.tensor(
    [[1.0, 0.5], [0.0, 0.0], [0.0, 1.0], [2.0, 2.0], [2.0, float("nan")], [float("nan"), float("nan")]]
)
WEIGHTS = torch.tensor([1.0, 0.5])


def run_trl_scoring(scale: str, mask_truncated: bool) -> dict[str, Any]:
    """TRL's generation masking then its scoring, on GENERATED and REWARD_MATRIX."""
    generator = trl_trainer(model_wrapped=FixedGeneration(GENERATED))
    completions, _ = generator._generate_single_turn(PROMPTS, None, {}, G)
    scorer = trl_trainer(
        rollout_func=lambda prompts, trainer: {
            "prompt_ids": PROMPTS,
            "completion_ids": completions,
            "logprobs": None,
        },
        mask_truncated_completions=mask_truncated,
        scale_rewards=scale,
        reward_weights=WEIGHTS,
        reward_func_names=["a", "b"],
    )
    scorer._calculate_rewards = lambda inputs, prompts, completions, ids: REWARD_MATRIX.clone()
    inputs = [{"prompt": f"prompt {i // G}"} for i in range(N)]
    return scorer._generate_and_score_completions(inputs)


def weighted_rewards() -> torch.Tensor:
    """The caller's composition of the reward parts: weighted NaN-skipping sum, NaN when all are NaN."""
    rewards = (REWARD_MATRIX * WEIGHTS).nansum(dim=1)
    return rewards.masked_fill(torch.isnan(REWARD_MATRIX).all(dim=1), float("nan"))


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(scale: str) -> None:
    expected = run_trl_scoring(scale, mask_truncated=False)["advantages"]
    ours = group_advantages(weighted_rewards(), G, scale)  # type: ignore[arg-type]
    assert torch.allclose(ours, expected, atol=1e-6, rtol=0)
    assert ours[-1] == 0.0  # the unscorable completion


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl_without_nans(scale: str) -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])
    generator = trl_trainer(model_wrapped=FixedGeneration(GENERATED))
    completions, _ = generator._generate_single_turn(PROMPTS, None, {}, G)
    scorer = trl_trainer(
        rollout_func=lambda prompts, trainer: {
            "prompt_ids": PROMPTS,
            "completion_ids": completions,
            "logprobs": None,
        },
        scale_rewards=scale,
    )
    scorer._calculate_rewards = lambda inputs, prompts, completions, ids: rewards.unsqueeze(1)
    expected = scorer._generate_and_score_completions([{"prompt": "p"}] * N)["advantages"]
    assert torch.allclose(group_advantages(rewards, G, scale), expected, atol=1e-6, rtol=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("mask_truncated", [False, True])
def test_completion_mask_and_token_count_match_trl(mask_truncated: bool) -> None:
    output = run_trl_scoring("group", mask_truncated)
    expected = output["completion_mask"]  # TRL re-pads to the longest kept completion
    ours = completion_mask(GENERATED, EOS_IDS, mask_truncated=mask_truncated, pad_token_id=PAD)
    width = expected.shape[1]
    assert torch.equal(ours[:, :width], expected)
    assert not ours[:, width:].any()
    assert ours.sum() == output["num_items_in_batch"]


# ---------------------------------------------------------------- loss


# Spread of log(pi / pi_old) per token: a sequence's mean log ratio varies less than one token's, so the
# sequence level needs a wider spread for its ratios to cross the clip bounds too.
RATIO_SPREAD = {"token": 0.4, "sequence": 1.0}


def loss_inputs(
    seed: int = 0, dtype: torch.dtype = torch.float32, level: str = "token"
) -> dict[str, torch.Tensor]:
    """Log-probs whose ratios cross both clip bounds, advantages of both signs, ragged masks (row 4 empty)."""
    generator = torch.Generator().manual_seed(seed)
    c = 5
    logps = -torch.rand(N, c, generator=generator, dtype=dtype) * 3
    return {
        "logps": logps,
        "old": logps + RATIO_SPREAD[level] * torch.randn(N, c, generator=generator, dtype=dtype),
        "ref": logps + 0.3 * torch.randn(N, c, generator=generator, dtype=dtype),
        "advantages": torch.tensor([1.2, -0.7, 0.0, -1.5, 0.9, 0.4], dtype=dtype),
        "mask": torch.tensor(
            [
                [1, 1, 1, 1, 1],
                [1, 1, 0, 0, 0],
                [1, 0, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [0, 0, 0, 0, 0],
                [1, 1, 1, 1, 0],
            ]
        ),
    }


def run_trl_loss(
    data: dict[str, torch.Tensor], training: bool = True, num_items: int = 40, **attributes: Any
) -> tuple[torch.Tensor, torch.Tensor, dict[str, list[float]]]:
    """TRL's ``_compute_loss`` on ``data``: its loss, the gradient w.r.t. the log-probs, its metrics."""
    logps = data["logps"].clone().requires_grad_(True)
    model = FixedLogProbs(logps)
    args = attributes.pop("args", {})
    trainer = trl_trainer(args=args, model=SimpleNamespace(training=training), **attributes)
    prompt = torch.ones(N, 2, dtype=torch.long)
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": prompt,
        "completion_ids": torch.ones_like(data["mask"]),
        "completion_mask": data["mask"],
        "advantages": data["advantages"],
        "old_per_token_logps": data["old"],
        "ref_per_token_logps": data["ref"],
        "num_items_in_batch": torch.tensor(num_items),
    }
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    return loss.detach(), logps.grad, trainer._metrics["train" if training else "eval"]


def run_our_loss(data: dict[str, torch.Tensor], **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    logps = data["logps"].clone().requires_grad_(True)
    loss, stats = policy_loss(logps, data["old"], data["ref"], data["advantages"], data["mask"], **kwargs)
    loss.backward()
    return loss.detach(), logps.grad, stats


def assert_stats_match(stats: Any, metrics: dict[str, list[float]], beta: float) -> None:
    pairs = {
        "clip_ratio/low_mean": stats.clip_ratio_low,
        "clip_ratio/high_mean": stats.clip_ratio_high,
        "clip_ratio/region_mean": stats.clip_ratio_region,
        "clip_ratio/low_min": stats.clip_ratio_low_min,
        "clip_ratio/high_max": stats.clip_ratio_high_max,
    }
    if beta != 0.0:  # TRL logs the KL only when it is in the loss
        pairs["kl"] = stats.kl
    for name, ours in pairs.items():
        assert ours.item() == pytest.approx(metrics[name][-1], abs=1e-6), name


LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
LEVELS = ("token", "sequence")
LOSS_CASES = [
    (loss_type, beta, epsilon_high, level)
    for loss_type in LOSS_TYPES
    for beta in (0.0, 0.04)
    for epsilon_high in (0.2, 0.28)
    for level in LEVELS
]


@pytest.mark.parametrize(("loss_type", "beta", "epsilon_high", "level"), LOSS_CASES)
def test_policy_loss_matches_trl_in_training(
    loss_type: str, beta: float, epsilon_high: float, level: str
) -> None:
    # Two processes, two accumulation steps, a generation batch spanning four micro-batches (S != GA,
    # so dapo's rescaling of num_items_in_batch is exercised). TRL's loss is already divided by the
    # accumulation steps; ours is not (Lightning divides it), hence the factor.
    accumulation, steps_per_generation, processes, generation_tokens = 2, 4, 2, 40
    data = loss_inputs(level=level)
    trl_loss, trl_grad, metrics = run_trl_loss(
        data,
        num_items=generation_tokens,
        loss_type=loss_type,
        beta=beta,
        importance_sampling_level=level,
        epsilon_low=0.2,
        epsilon_high=epsilon_high,
        current_gradient_accumulation_steps=accumulation,
        max_completion_length=8,
        accelerator=OneProcessAccelerator(processes),
        args={"steps_per_generation": steps_per_generation, "gradient_accumulation_steps": accumulation},
    )
    loss, grad, stats = run_our_loss(
        data,
        loss_type=loss_type,
        beta=beta,
        epsilon_low=0.2,
        epsilon_high=epsilon_high,
        max_completion_length=8,
        importance_sampling_level=level,
        # Tokens of one optimizer step: the generation batch's tokens scaled to GA of its S micro-batches.
        context=StepContext(processes, accumulation, generation_tokens * accumulation / steps_per_generation),
    )
    assert loss.item() == pytest.approx(trl_loss.item() * accumulation, abs=1e-6)
    assert torch.allclose(grad, trl_grad * accumulation, atol=1e-6, rtol=0)
    assert_stats_match(stats, metrics, beta)
    assert stats.clip_ratio_low > 0 and stats.clip_ratio_high > 0  # both bounds crossed at either level


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_policy_loss_matches_trl_in_evaluation(loss_type: str, level: str) -> None:
    # Evaluation: no accumulation scaling, dapo divides by the batch tokens per process.
    data = loss_inputs(seed=1, dtype=torch.float64, level=level)
    trl_loss, trl_grad, metrics = run_trl_loss(
        data,
        training=False,
        num_items=14,
        loss_type=loss_type,
        beta=0.04,
        max_completion_length=5,
        importance_sampling_level=level,
    )
    loss, grad, stats = run_our_loss(
        data,
        loss_type=loss_type,
        beta=0.04,
        context=StepContext(num_items_in_batch=14),
        importance_sampling_level=level,
    )
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    assert torch.allclose(grad, trl_grad, atol=1e-6, rtol=0)
    assert_stats_match(stats, metrics, 0.04)


@pytest.mark.parametrize("level", LEVELS)
def test_two_sided_clipping_matches_trl(level: str) -> None:
    data = loss_inputs(seed=2, level=level)
    trl_loss, trl_grad, metrics = run_trl_loss(
        data, training=False, beta=0.04, args={"delta": 1.1}, importance_sampling_level=level
    )
    loss, grad, stats = run_our_loss(data, beta=0.04, delta=1.1, importance_sampling_level=level)
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    assert torch.allclose(grad, trl_grad, atol=1e-6, rtol=0)
    assert_stats_match(stats, metrics, 0.04)


@pytest.mark.parametrize("level", LEVELS)
def test_no_stored_old_logps_matches_trl(level: str) -> None:
    # num_iterations == 1: TRL stores no old log-probs and uses the detached current ones.
    data = loss_inputs(seed=3)
    logps = data["logps"].clone().requires_grad_(True)
    trainer = trl_trainer(model=SimpleNamespace(training=False), beta=0.04, importance_sampling_level=level)
    prompt = torch.ones(N, 2, dtype=torch.long)
    inputs = {
        "prompt_ids": prompt,
        "prompt_mask": prompt,
        "completion_ids": torch.ones_like(data["mask"]),
        "completion_mask": data["mask"],
        "advantages": data["advantages"],
        "ref_per_token_logps": data["ref"],
        "num_items_in_batch": torch.tensor(14),
    }
    trl_loss = trainer._compute_loss(FixedLogProbs(logps), inputs)
    trl_loss.backward()
    ours_logps = data["logps"].clone().requires_grad_(True)
    loss, _ = policy_loss(
        ours_logps,
        None,
        data["ref"],
        data["advantages"],
        data["mask"],
        beta=0.04,
        importance_sampling_level=level,  # type: ignore[arg-type]
    )
    loss.backward()
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    assert torch.allclose(ours_logps.grad, logps.grad, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- log-probs through a real model


@pytest.fixture(scope="module")
def tiny_lm() -> torch.nn.Module:
    """A tiny random Qwen2 causal LM carrying TRL's fused LM head at sampling temperature 0.7."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=37,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    model = Qwen2ForCausalLM(config)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    return model


def tiny_rollout() -> Rollout:
    generator = torch.Generator().manual_seed(4)
    completions = torch.randint(3, 37, (N, 4), generator=generator)
    completions[0, 2] = EOS_IDS[0]  # a short completion: padding-masked tail
    completions[3, 0] = EOS_IDS[1]
    prompt_ids = torch.randint(3, 37, (N, 3), generator=generator)
    prompt_mask = torch.ones(N, 3, dtype=torch.long)
    prompt_mask[1, 0] = 0  # left padding
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 0.0])
    return Rollout(
        prompt_inputs={
            "input_ids": prompt_ids.masked_fill(prompt_mask == 0, PAD),
            "attention_mask": prompt_mask,
        },
        completion_ids=completions,
        completion_mask=completion_mask(completions, EOS_IDS),
        texts=[""] * N,
        rewards=rewards,
        reward_components={"reward": rewards},
        advantages=group_advantages(rewards, G),
        num_generations=G,
    )


def our_logps(model: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    inputs, prompt_length = rollout.model_inputs()
    logits = model(**inputs).logits  # the plain forward (fused_lm_head off)
    return token_logps(logits[:, prompt_length - 1 : -1], rollout.completion_ids, temperature=0.7)


def test_token_logps_match_trl_fused_head_with_temperature(tiny_lm: torch.nn.Module) -> None:
    rollout = tiny_rollout()
    inputs, _ = rollout.model_inputs()
    trainer = trl_trainer()
    c = rollout.completion_ids.shape[1]
    with torch.no_grad():
        expected, _, _ = trainer._get_per_token_logps_and_entropies(
            tiny_lm, inputs["input_ids"], inputs["attention_mask"], c
        )
        ours = our_logps(tiny_lm, rollout)
    mask = rollout.completion_mask.bool()  # TRL zeroes the padding positions
    assert torch.allclose(ours[mask], expected[mask], atol=1e-6, rtol=0)
    assert not expected[~mask].any()


def test_compute_loss_end_to_end_matches_trl(tiny_lm: torch.nn.Module) -> None:
    rollout = tiny_rollout()
    with torch.no_grad():
        sampled = our_logps(tiny_lm, rollout)
    generator = torch.Generator().manual_seed(5)
    old = sampled + 0.3 * torch.randn(sampled.shape, generator=generator)
    ref = sampled + 0.2 * torch.randn(sampled.shape, generator=generator)
    trainer = trl_trainer(model=SimpleNamespace(training=False), beta=0.04, loss_type="grpo")
    inputs = {
        "prompt_ids": rollout.prompt_inputs["input_ids"],
        "prompt_mask": rollout.prompt_inputs["attention_mask"],
        "completion_ids": rollout.completion_ids,
        "completion_mask": rollout.completion_mask,
        "advantages": rollout.advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": rollout.completion_mask.sum(),
    }
    tiny_lm.zero_grad()
    trl_loss = trainer._compute_loss(tiny_lm, inputs)
    trl_loss.backward()
    trl_grads = {name: p.grad.clone() for name, p in tiny_lm.named_parameters()}
    tiny_lm.zero_grad()
    loss, _ = policy_loss(
        our_logps(tiny_lm, rollout), old, ref, rollout.advantages, rollout.completion_mask, beta=0.04
    )
    loss.backward()
    assert loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    for name, p in tiny_lm.named_parameters():
        assert torch.allclose(p.grad, trl_grads[name], atol=1e-6, rtol=0), name
