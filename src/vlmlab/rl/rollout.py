"""The container one GRPO generation step hands to the loss: prompts, completions, rewards, advantages."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor
from transformers.utils import ModelOutput

from vlmlab.models.vision import reorder_inputs, reorder_media

# Per-token prompt fields that must be extended (with zeros: "text") over the completion tokens when
# prompt and completion are fed to the model together; Qwen3-VL's forward needs mm_token_type_ids.
PER_TOKEN_FIELDS = ("token_type_ids", "mm_token_type_ids")


@dataclass
class Rollout:
    """B prompts x G sampled completions, N = B * G rows in group order (p0 x G, p1 x G, ...).

    prompt_inputs: processor output for the prompts, each prompt's rows repeated G times:
        input_ids [N, P] and attention_mask [N, P] (left-padded), plus the vision grids and, unless
        ``media`` holds the encoded vision, the pixels (per item, items in row order).
    media: the vision encoder outputs laid out for the N rows (``vlmlab.models.vision``), reused by
        every log-prob pass instead of the pixels; None when the vision tower trains.
    item_counts: modality -> vision items of each of the N rows (to select rows with their items).
    completion_ids: [N, C] generated tokens (padding after EOS).
    completion_mask: [N, C] 1 for tokens in the loss (:func:`vlmlab.rl.grpo.completion_mask`).
    texts: N decoded completions.
    rewards: [N] weighted total reward.
    reward_components: name -> [N] each reward part, for logging.
    advantages: [N] (:func:`vlmlab.rl.grpo.group_advantages`).
    num_generations: G.
    old_logps: [N, C] sampling-policy log-probs, stored when the rollout is reused (num_iterations > 1).
    ref_logps: [N, C] reference-model log-probs, when the KL weight is not 0.
    ids: B (or N) sample ids; targets: B (or N) ground truths the rewards used.
    """

    prompt_inputs: dict[str, Tensor]
    completion_ids: Tensor
    completion_mask: Tensor
    texts: list[str]
    rewards: Tensor
    reward_components: dict[str, Tensor]
    advantages: Tensor
    num_generations: int
    old_logps: Tensor | None = None
    ref_logps: Tensor | None = None
    ids: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    media: dict[str, Any] | None = None
    item_counts: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, c = self.completion_ids.shape
        problems = []
        if self.num_generations < 1 or n % self.num_generations:
            problems.append(f"{n} completions are not groups of num_generations={self.num_generations}")
        if self.completion_mask.shape != (n, c):
            problems.append(f"completion_mask {tuple(self.completion_mask.shape)} != completion_ids {(n, c)}")
        for name in ("old_logps", "ref_logps"):
            value = getattr(self, name)
            if value is not None and value.shape != (n, c):
                problems.append(f"{name} {tuple(value.shape)} != completion_ids {(n, c)}")
        for name, value in [("rewards", self.rewards), ("advantages", self.advantages)] + [
            (f"reward_components[{k!r}]", v) for k, v in self.reward_components.items()
        ]:
            if value.shape != (n,):
                problems.append(f"{name} has shape {tuple(value.shape)}, expected ({n},)")
        if len(self.texts) != n:
            problems.append(f"{len(self.texts)} texts for {n} completions")
        prompt_ids = self.prompt_inputs.get("input_ids")
        if prompt_ids is None or prompt_ids.shape[0] != n:
            problems.append(f"prompt_inputs['input_ids'] must have {n} rows (prompts repeated G times)")
        if problems:
            raise ValueError("inconsistent Rollout: " + "; ".join(problems))

    @property
    def num_prompts(self) -> int:
        """B."""
        return self.completion_ids.shape[0] // self.num_generations

    def to(self, device: torch.device | str) -> Rollout:
        """A copy with every tensor on ``device`` (texts, ids and targets shared)."""

        def move(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: move(v) for k, v in value.items()}
            return value

        tensor_fields = {"prompt_inputs", "completion_ids", "completion_mask", "rewards"}
        tensor_fields |= {"reward_components", "advantages", "old_logps", "ref_logps"}
        return replace(
            self, **{f.name: move(getattr(self, f.name)) for f in fields(self) if f.name in tensor_fields}
        )

    def state_dict(self) -> dict[str, Any]:
        """This rollout as tensors, strings and numbers (``torch.load(weights_only=True)`` reads it), for
        GRPO checkpoints taken between the steps that reuse it. ``targets`` are left out: they only fed
        the rewards, already computed. Encoded vision outputs (transformers ``ModelOutput``) are kept
        as their class path and fields."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "targets"}
        if self.media is not None:
            state["media"] = {
                modality: {
                    "class": f"{type(out).__module__}.{type(out).__qualname__}",
                    "fields": dict(out.items()),
                }
                for modality, out in self.media.items()
            }
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Rollout:
        """The inverse of :meth:`state_dict` (with empty ``targets``)."""
        state = dict(state)
        if state.get("media") is not None:
            state["media"] = {modality: _model_output(out) for modality, out in state["media"].items()}
        return cls(**state)

    def select_groups(self, groups: Sequence[int]) -> Rollout:
        """The rollout of the prompt groups ``groups`` (indices in ``range(num_prompts)``, in that
        order): every per-row field, the rows' vision items and encoded media carried along."""
        G = self.num_generations
        rows = [g * G + k for g in groups for k in range(G)]
        index = torch.as_tensor(rows, dtype=torch.long, device=self.completion_ids.device)

        def pick(value: Tensor | None) -> Tensor | None:
            return None if value is None else value.index_select(0, index)

        def entries(values: list[Any]) -> list[Any]:  # ids / targets: per prompt, per row, or none
            if len(values) == self.num_prompts:
                return [values[g] for g in groups]
            return [values[r] for r in rows] if values else []

        return replace(
            self,
            prompt_inputs=reorder_inputs(self.prompt_inputs, self.item_counts, rows),
            media=reorder_media(self.media, self.item_counts, rows) if self.media is not None else None,
            item_counts={m: [c[r] for r in rows] for m, c in self.item_counts.items()},
            completion_ids=pick(self.completion_ids),
            completion_mask=pick(self.completion_mask),
            texts=[self.texts[r] for r in rows],
            rewards=pick(self.rewards),
            reward_components={k: pick(v) for k, v in self.reward_components.items()},
            advantages=pick(self.advantages),
            old_logps=pick(self.old_logps),
            ref_logps=pick(self.ref_logps),
            ids=entries(self.ids),
            targets=entries(self.targets),
        )

    def model_inputs(self, rows: Sequence[int] | None = None) -> tuple[dict[str, Any], int]:
        """Inputs scoring the completions of ``rows`` (default all) in one forward, and the prompt
        length P: input_ids / attention_mask [n, P + C] (prompt then completion, completion padding
        masked), the rows' vision items (or encoded ``media``), per-token type ids extended with 0
        (text) over the completion. Log-probs of the completion are then
        ``token_logps(logits[:, P - 1 : -1], completion_ids[rows])``."""
        rows = list(range(self.completion_ids.shape[0])) if rows is None else list(rows)
        prompt = reorder_inputs(self.prompt_inputs, self.item_counts, rows)
        completion = self.completion_ids[rows]
        inputs: dict[str, Any] = dict(prompt)
        inputs["input_ids"] = torch.cat([prompt["input_ids"], completion], dim=1)
        attention = prompt["attention_mask"]
        inputs["attention_mask"] = torch.cat(
            [attention, self.completion_mask[rows].to(attention.dtype)], dim=1
        )
        for name in PER_TOKEN_FIELDS:
            if name in inputs:
                inputs[name] = torch.cat([inputs[name], inputs[name].new_zeros(completion.shape)], dim=1)
        if self.media is not None:
            inputs["mm_encoder_outputs"] = reorder_media(self.media, self.item_counts, rows)
        return inputs, prompt["input_ids"].shape[1]


def _model_output(saved: dict[str, Any]) -> ModelOutput:
    module_name, _, name = saved["class"].rpartition(".")
    cls = (
        getattr(importlib.import_module(module_name), name, None)
        if module_name.startswith("transformers.")
        else None
    )
    if not (isinstance(cls, type) and issubclass(cls, ModelOutput)):
        raise ValueError(
            f"checkpoint rollout media of class {saved['class']!r}: expected a transformers ModelOutput"
        )
    return cls(**saved["fields"])
