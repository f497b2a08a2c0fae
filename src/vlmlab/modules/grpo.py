"""GRPO with rollouts inside the LightningModule (docs/design.md, "Methods").

One ``training_step`` = one optimizer micro-step on one batch of prompts:

1. vision: with a frozen vision tower the prompts' images/videos are encoded once
   (:func:`vlmlab.models.vision.encode_media`) and reused by every pass below;
2. rollouts: G sampled completions per prompt with ``generate`` (eval mode, KV cache, ZeRO-3 synced
   GPUs when sharded), masked after the first EOS;
3. rewards from the configured :class:`vlmlab.rewards.compose.Reward`, group-relative advantages;
4. the clipped policy loss with a k3 KL term against the reference model (LoRA: the same backbone
   with adapters disabled; full fine-tuning: a frozen copy of the initial weights).

The maths is in :mod:`vlmlab.rl.grpo` and matches TRL's GRPOTrainer on the same tensors.

Batch semantics (as TRL): ``data.batch_size`` prompts per micro-step, each with
``num_generations`` completions, so a micro-step trains on ``batch_size * num_generations``
sequences; ``trainer.accumulate_grad_batches`` micro-steps make one optimizer step (Lightning
averages their losses, as the HF Trainer does). With ``num_iterations > 1`` each rollout batch is
reused for that many optimizer steps: the rollouts of the ``accumulate_grad_batches`` micro-steps
are kept with their old log-probs, and new prompts are only generated for every
``num_iterations``-th optimizer step (the batches fed in between are skipped, as TRL's buffer does).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.strategies import DeepSpeedStrategy
from transformers import ProcessorMixin

from vlmlab.compat.lightning import generation_sync_kwargs
from vlmlab.data.collate import VisionLanguageBatch
from vlmlab.models.backbone import BackboneSpec, count_parameters, vision_tower
from vlmlab.models.vision import (
    encode_media,
    grouped_rows,
    item_counts,
    placeholder_ids,
    reorder_inputs,
    reorder_media,
    text_inputs,
)
from vlmlab.modules.common import (
    TrainableWeightsCheckpoint,
    export_backbone,
    skip_nonfinite_loss,
    write_predictions,
)
from vlmlab.modules.generation import GenerationSettings, Generator
from vlmlab.modules.optim import OptimSettings, configure_adamw
from vlmlab.rl.dynamic_sampling import informative_groups, part_weights
from vlmlab.rl.grpo import (
    IMPORTANCE_SAMPLING_LEVELS,
    StepContext,
    dapo_gradient_scale,
    group_advantages,
    policy_loss,
    zero_std_fraction,
)
from vlmlab.rl.rollout import Rollout

log = logging.getLogger(__name__)


@dataclass
class GRPOSettings:
    """GRPO hyper-parameters (names as TRL's GRPOConfig).

    num_generations: completions per prompt (G). beta: KL coefficient (0 disables the reference).
    epsilon_low / epsilon_high: clip range of the ratio (high None = low). loss_type: grpo | bnpo |
    dr_grpo | dapo. scale_rewards: group | batch | none. num_iterations: optimizer steps per rollout
    batch. mask_truncated_completions: no loss on completions that never emitted EOS.
    logprob_micro_batch_size: rows per log-prob forward pass (None: all at once).
    log_completions_every_n_steps: a TensorBoard text table of prompts, completions and rewards.
    dynamic_sampling: DAPO's dynamic sampling: drop prompt groups whose rewards all agree and draw
        more prompts (the next loader batches, one per training step) until an update has as many
        informative groups as a batch has prompts; a step spent drawing updates nothing (Lightning
        still counts it in ``max_steps``). max_prompt_draws: loader batches one update may draw; it
        then trains on the informative groups it has (none: no update).
    importance_sampling_level: "token" (GRPO) or "sequence" (GSPO: one clipped ratio per completion,
        the geometric mean of its token ratios; see :func:`vlmlab.rl.grpo.log_importance_weights`).
    """

    num_generations: int = 8
    beta: float = 0.04
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "grpo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    num_iterations: int = 1
    mask_truncated_completions: bool = False
    logprob_micro_batch_size: int | None = 8
    log_completions_every_n_steps: int = 10
    dynamic_sampling: bool = False
    max_prompt_draws: int = 4
    importance_sampling_level: Literal["token", "sequence"] = "token"

    def __post_init__(self) -> None:
        if self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
            raise ValueError(
                f"grpo.importance_sampling_level={self.importance_sampling_level!r}; expected one of "
                f"{IMPORTANCE_SAMPLING_LEVELS}"
            )
        if self.dynamic_sampling and self.num_iterations != 1:
            raise ValueError(
                "grpo.dynamic_sampling needs grpo.num_iterations=1 (a rollout is trained on once)"
            )
        if self.max_prompt_draws < 1:
            raise ValueError(f"grpo.max_prompt_draws={self.max_prompt_draws}; expected >= 1")


class GRPOModule(TrainableWeightsCheckpoint):
    """Group-relative policy optimisation of a Qwen-VL backbone (LoRA or full).

    reward: a callable ``reward(completions, targets) -> list[dict[str, float]]`` with a ``total``
        per completion (``conf/reward``); every component is logged.
    generation: sampling settings of the rollouts (``do_sample`` is forced on); validation decodes
        greedily and logs the same rewards under ``val/``.
    """

    def __init__(
        self,
        backbone: BackboneSpec,
        optim: OptimSettings,
        generation: GenerationSettings,
        grpo: GRPOSettings,
        reward: Any,
        metrics: torch.nn.Module | None = None,
        processor: ProcessorMixin | None = None,
        predictions_file: str | None = None,
    ):
        super().__init__()
        if not callable(reward):
            raise ValueError(
                "GRPO needs a reward: choose one with reward=<name> (conf/reward), e.g. reward=brats_3d"
            )
        self.save_hyperparameters(
            {
                "backbone": asdict(backbone),
                "optim": asdict(optim),
                "generation": asdict(generation),
                "grpo": asdict(grpo),
            }
        )
        self.backbone = backbone
        self.optim = optim
        self.generation = generation
        self.grpo = grpo
        self.reward = reward
        self.metrics = metrics
        self.processor = processor if processor is not None else backbone.load_processor()
        self.model = backbone.load_model(self.processor)
        self.generator = Generator(
            self.processor.tokenizer,
            backbone.chat.end_of_turn_id(self.processor.tokenizer),
            mask_truncated=grpo.mask_truncated_completions,
            logprob_micro_batch_size=grpo.logprob_micro_batch_size,
        )
        self.vision_frozen = not any(p.requires_grad for p in vision_tower(self.model).parameters())
        # Full fine-tuning needs a frozen copy as the reference; LoRA disables its adapters instead.
        self.reference = None
        if grpo.beta > 0 and not isinstance(self.model, PeftModel):
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.predictions_file = predictions_file
        self._buffer: dict[int, Rollout] = {}
        self._pending: list[Rollout] = []  # dynamic sampling: informative groups gathered so far
        self._draws = 0  # dynamic sampling: loader batches drawn for the next update
        self._micro_step = 0
        self._step_tokens = 0.0  # dapo: loss tokens of the optimizer step so far (this rank)
        self._val_rewards: list[dict[str, float]] = []
        trainable, total = count_parameters(self.model)
        log.info("GRPO backbone %s: %.2fM trainable of %.2fM", backbone.family, trainable / 1e6, total / 1e6)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    # ----------------------------------------------------------------------------- rollouts

    @torch.no_grad()
    def rollout(self, batch: VisionLanguageBatch) -> Rollout:
        """G sampled completions per prompt, their rewards and advantages (and old / ref log-probs)."""
        prompts, G = batch.prompt_inputs, self.grpo.num_generations
        batch_size = prompts["input_ids"].shape[0]
        merge = self.model.config.vision_config.spatial_merge_size
        counts = item_counts(prompts, placeholder_ids(self.model), merge)
        media = encode_media(self.model, prompts) if self.vision_frozen else None
        extra: dict[str, Any] = generation_sync_kwargs(
            self.trainer.strategy if self._trainer is not None else None
        )
        if media:
            extra["mm_encoder_outputs"] = reorder_media(media, counts, range(batch_size))
        sampling = replace(self.generation, do_sample=True)
        completions = self.generator.generate(
            self.model, text_inputs(prompts) if media else prompts, sampling, G, **extra
        )
        rows = grouped_rows(batch_size, G)
        targets = [batch.targets[r] for r in rows]
        scores = self.reward(completions.texts, targets)
        components = {
            name: torch.tensor([s[name] for s in scores], dtype=torch.float32, device=self.device)
            for name in scores[0]
        }
        rollout = Rollout(
            prompt_inputs=reorder_inputs(text_inputs(prompts) if media else prompts, counts, rows),
            media=reorder_media(media, counts, rows) if media else None,
            item_counts={m: [c[r] for r in rows] for m, c in counts.items()},
            completion_ids=completions.ids,
            completion_mask=completions.mask,
            texts=completions.texts,
            rewards=components["total"],
            reward_components=components,
            advantages=group_advantages(components["total"], G, self.grpo.scale_rewards),
            ids=[batch.ids[r] for r in rows],
            targets=targets,
            num_generations=G,
        )
        if self.grpo.num_iterations > 1:
            rollout.old_logps = self.sequence_logps(rollout)
        if self.grpo.beta > 0:
            rollout.ref_logps = self.sequence_logps(rollout, reference=True)
        return rollout

    def sequence_logps(self, rollout: Rollout, reference: bool = False) -> torch.Tensor:
        """Per-token log-probs of the completions [N, C]: under the reference model (no grad), or the
        policy (with grad when the module is training and grad is enabled)."""
        if reference:
            with torch.no_grad():
                return self.generator.logps(self._reference_logits, rollout, self.generation.temperature)
        return self.generator.logps(
            lambda inputs: self.model(**inputs).logits, rollout, self.generation.temperature
        )

    def _reference_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(**inputs).logits
        with self.model.disable_adapter():
            return self.model(**inputs).logits

    # ----------------------------------------------------------------------------- training

    def step_context(self) -> StepContext:
        """Where this micro-step sits in its optimizer step. dapo divides by the step's global token
        count, known only after its last micro-step: each micro-step's loss is then the plain masked
        sum (normaliser 1) and :meth:`on_before_optimizer_step` divides the gradient exactly. DeepSpeed
        owns the gradients, so there dapo estimates the count from each micro-batch (TRL's fallback)."""
        trainer = self._trainer
        processes = trainer.world_size if trainer is not None else 1
        accumulation = trainer.accumulate_grad_batches if trainer is not None else 1
        context = StepContext(processes, accumulation)
        if self.grpo.loss_type == "dapo" and self._defers_dapo():
            return replace(context, num_items_in_batch=context.shards)
        return context

    def _defers_dapo(self) -> bool:
        return self._trainer is not None and not isinstance(self.trainer.strategy, DeepSpeedStrategy)

    def on_fit_start(self) -> None:
        if self.grpo.dynamic_sampling and self.trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "grpo.dynamic_sampling gathers prompts over training steps itself: "
                "set trainer.accumulate_grad_batches=1 (raise data.batch_size instead)"
            )

    def _buffered_rollout(self, batch: VisionLanguageBatch) -> Rollout:
        """This micro-step's rollout: fresh, or the stored one while ``num_iterations`` reuse it."""
        accumulation = self.trainer.accumulate_grad_batches if self._trainer else 1
        slot = self._micro_step % accumulation
        if (self._micro_step // accumulation) % self.grpo.num_iterations == 0 or slot not in self._buffer:
            self._buffer[slot] = self.rollout(batch)
        self._micro_step += 1
        rollout = self._buffer[slot]
        # Every step logs the rollout it trains on (with num_iterations > 1 a rollout serves several steps).
        self._log_rollout(rollout)
        return rollout

    def _gathered_rollouts(self, batch: VisionLanguageBatch) -> list[Rollout]:
        """Dynamic sampling: this batch's informative groups added to those gathered so far; the
        parts to train on once they hold a batch's worth of groups (or the draws ran out), else []."""
        rollout = self.rollout(batch)
        self._log_rollout(rollout)  # frac_zero_std_groups before filtering
        self._micro_step += 1
        self._draws += 1
        wanted = rollout.num_prompts
        groups = informative_groups(rollout.rewards, rollout.num_generations)
        have = sum(part.num_prompts for part in self._pending)
        if groups:
            self._pending.append(rollout.select_groups(groups[: wanted - have]))
        have = sum(part.num_prompts for part in self._pending)
        if have < wanted and self._draws < self.grpo.max_prompt_draws:
            self.log("train/dynamic_sampling/updated", 0.0, batch_size=len(rollout.texts))
            return []
        parts, drawn = self._pending, self._draws * wanted
        self._pending, self._draws = [], 0
        self.log_dict(
            {
                "train/dynamic_sampling/updated": float(bool(parts)),
                "train/dynamic_sampling/extra_prompts": float(drawn - wanted),
                "train/dynamic_sampling/groups": float(have),
            },
            batch_size=len(rollout.texts),
        )
        return parts

    def training_step(self, batch: VisionLanguageBatch, batch_idx: int) -> torch.Tensor | None:
        if self.grpo.dynamic_sampling:
            parts = self._gathered_rollouts(batch)
        else:
            parts = [self._buffered_rollout(batch)]
        if not parts:
            return None  # still drawing prompts (dynamic sampling): no update this step
        losses, stats = zip(*(self._policy_loss(part) for part in parts), strict=True)
        weights = part_weights(
            self.grpo.loss_type,
            [len(part.texts) for part in parts],
            [float(s.num_tokens) for s in stats],
            summed=self.grpo.loss_type == "dapo" and self._defers_dapo(),
        )
        loss = sum(w * part_loss for w, part_loss in zip(weights, losses, strict=True))
        ids = list(dict.fromkeys(i for part in parts for i in part.ids))
        if skip_nonfinite_loss(self, loss, ids):
            return None  # Lightning skips backward and the optimizer step
        self._step_tokens += sum(float(s.num_tokens) for s in stats)
        logged = {"train/loss": loss.detach()}
        for name in ("kl", "clip_ratio_low", "clip_ratio_high", "clip_ratio_region"):
            values = [getattr(s, name, None) for s in stats]
            if all(v is not None for v in values):
                logged[f"train/{name}"] = sum(w * v for w, v in zip(weights, values, strict=True))
        self.log_dict(logged, prog_bar=False, batch_size=sum(len(part.texts) for part in parts))
        return loss

    def _policy_loss(self, rollout: Rollout) -> tuple[torch.Tensor, Any]:
        logps = self.sequence_logps(rollout)
        old = rollout.old_logps if rollout.old_logps is not None else logps.detach()
        ref = rollout.ref_logps if rollout.ref_logps is not None else logps.detach()
        return policy_loss(
            logps,
            old,
            ref,
            rollout.advantages,
            rollout.completion_mask,
            loss_type=self.grpo.loss_type,
            epsilon_low=self.grpo.epsilon_low,
            epsilon_high=self.grpo.epsilon_high,
            beta=self.grpo.beta,
            max_completion_length=self.generation.max_new_tokens,
            context=self.step_context(),
            importance_sampling_level=self.grpo.importance_sampling_level,
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """dapo: divide the step's gradient by its global token count (see :meth:`step_context`)."""
        tokens, self._step_tokens = self._step_tokens, 0.0
        if self.grpo.loss_type != "dapo" or not self._defers_dapo():
            return
        total = self.trainer.strategy.reduce(torch.tensor(tokens, device=self.device), reduce_op="sum")
        scale = dapo_gradient_scale(
            float(total), StepContext(self.trainer.world_size, self.trainer.accumulate_grad_batches)
        )
        for parameter in self.parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(scale)

    def _log_rollout(self, rollout: Rollout) -> None:
        G = rollout.num_generations
        values = {}
        for name, scores in rollout.reward_components.items():
            key = "total" if name == "total" else name
            values[f"train/reward/{key}"] = scores.mean()
            values[f"train/reward/{key}_std"] = scores.std() if scores.numel() > 1 else torch.zeros(())
        values["train/advantage_std"] = (
            rollout.advantages.std() if rollout.advantages.numel() > 1 else torch.zeros(())
        )
        values["train/frac_zero_std_groups"] = zero_std_fraction(rollout.rewards, G)
        lengths = rollout.completion_mask.sum(1).float()
        values["train/completion_length"] = lengths.mean()
        values["train/completion_length_max"] = lengths.max()
        values["train/truncated_fraction"] = (rollout.completion_mask[:, -1] > 0).float().mean()
        self.log_dict(
            {k: v.float() for k, v in values.items()}, prog_bar=False, batch_size=len(rollout.texts)
        )
        self.log(
            "train/reward", values["train/reward/total"].float(), prog_bar=True, batch_size=len(rollout.texts)
        )
        every = self.grpo.log_completions_every_n_steps
        if every and self.global_step % every == 0 and isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_text("train/completions", completion_table(rollout), self.global_step)

    # ----------------------------------------------------------------------------- evaluation

    def _evaluate(self, batch: VisionLanguageBatch, stage: str) -> dict[str, list[str]]:
        greedy = replace(self.generation, do_sample=False)
        texts = self.generator.generate(self.model, batch.prompt_inputs, greedy).texts
        scores = self.reward(texts, batch.targets)
        for sample_id, text, score, target in zip(batch.ids, texts, scores, batch.targets, strict=True):
            self._val_rewards.append({"id": sample_id, "prediction": text, "target": target, "reward": score})
        if self.metrics is not None:
            self.metrics.update(texts, batch.targets)
        return {"predictions": texts}

    def validation_step(self, batch: VisionLanguageBatch, batch_idx: int) -> dict[str, list[str]]:
        """Greedy answers, returned so that callbacks (e.g. pictures) see them as ``outputs``."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: VisionLanguageBatch, batch_idx: int) -> dict[str, list[str]]:
        return self._evaluate(batch, "test")

    def _end_evaluation(self, stage: str) -> None:
        if self._val_rewards:
            names = self._val_rewards[0]["reward"].keys()
            means = {
                f"{stage}/reward/{name}": sum(r["reward"][name] for r in self._val_rewards)
                / len(self._val_rewards)
                for name in names
            }
            self.log_dict(means, sync_dist=True)
        if self.metrics is not None:
            scores = self.metrics.compute()
            self.log_dict({f"{stage}/{self.metrics.group}/{k}": v for k, v in scores.items()}, sync_dist=True)
            self.metrics.reset()
        if stage == "test" and self.predictions_file:
            write_predictions(self.predictions_file, self._val_rewards, self.trainer)
        self._val_rewards.clear()

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    # ----------------------------------------------------------------------------- plumbing

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also save the micro-step counter and, when rollouts are reused (``num_iterations > 1``),
        the rollout buffer: a checkpoint between the optimizer steps that share a rollout batch must
        resume with those rollouts. With ``num_iterations == 1`` every micro-step makes a fresh
        rollout, so the buffer is never read again and is not saved. Dynamic sampling's gathered
        groups are saved too: a resumed run trains on the groups the interrupted one had drawn."""
        super().on_save_checkpoint(checkpoint)
        reused = self.grpo.num_iterations > 1
        checkpoint[STEP_STATE_KEY] = {
            "micro_step": self._micro_step,
            "buffer": {slot: r.state_dict() for slot, r in self._buffer.items()} if reused else {},
            "pending": [r.state_dict() for r in self._pending],
            "draws": self._draws,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(STEP_STATE_KEY)
        if state is None:
            return
        self._micro_step = int(state["micro_step"])
        self._buffer = {int(slot): Rollout.from_state_dict(r) for slot, r in state["buffer"].items()}
        self._pending = [Rollout.from_state_dict(r) for r in state.get("pending", [])]
        self._draws = int(state.get("draws", 0))

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self.model, self.optim, int(self.trainer.estimated_stepping_batches))

    def export_hf(self, out_dir: str | Path) -> Path:
        """The policy and processor in Hugging Face format (:func:`export_backbone`)."""
        return export_backbone(self.model, self.processor, self.backbone, out_dir)


STEP_STATE_KEY = "grpo_step_state"


def completion_table(rollout: Rollout, max_rows: int = 16) -> str:
    """A markdown table of sample ids, completions and reward components (TensorBoard text)."""
    names = list(rollout.reward_components)
    rows = ["| id | completion | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for i in range(min(max_rows, len(rollout.texts))):
        text = rollout.texts[i].replace("|", "\\|").replace("\n", " ")[:300]
        scores = " | ".join(f"{rollout.reward_components[n][i].item():.3f}" for n in names)
        rows.append(f"| {rollout.ids[i]} | {text} | {scores} |")
    return "\n".join(rows)
