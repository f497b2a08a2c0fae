"""Generation and completion log-probs: the one helper SFT validation, evaluation and GRPO rollouts use.

:class:`Generator` runs transformers' ``generate`` from left-padded prompts (eval mode, KV cache),
masks each completion after its first end-of-turn token, decodes it, and scores completions under a
model (the log-probs GRPO's loss needs) in micro-batches of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from vlmlab.rl.grpo import completion_mask, micro_batches, token_logps
from vlmlab.rl.rollout import Rollout

__all__ = ["Completions", "GenerationSettings", "Generator"]


@dataclass
class GenerationSettings:
    """``generate`` arguments. ``do_sample=false`` is greedy (validation); GRPO samples.

    top_k: 0 disables top-k filtering (TRL's GRPO default; transformers would apply 50).
    """

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Completions:
    """N generated completions.

    ids: [N, C] generated tokens (padding after the end of turn). mask: [N, C] 1 up to and including
    the first end-of-turn token (:func:`vlmlab.rl.grpo.completion_mask`). texts: N decoded texts
    (special tokens removed).
    """

    ids: Tensor
    mask: Tensor
    texts: list[str]


class Generator:
    """Generate, mask, decode and score completions of one model family's chat.

    tokenizer: the processor's tokenizer. end_of_turn_id: the token that ends the assistant's turn
    (generation stops there; the loss mask includes it). mask_truncated: a completion that never
    ended gets an all-0 mask (GRPO's ``mask_truncated_completions``). logprob_micro_batch_size: rows
    per log-prob forward pass (bounds the ``[rows, C, vocab]`` logits); None: all at once.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        end_of_turn_id: int,
        mask_truncated: bool = False,
        logprob_micro_batch_size: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.end_of_turn_id = end_of_turn_id
        self.mask_truncated = mask_truncated
        self.logprob_micro_batch_size = logprob_micro_batch_size

    @torch.no_grad()
    def generate(
        self,
        model: torch.nn.Module,
        prompt_inputs: dict[str, Any],
        settings: GenerationSettings,
        num_return_sequences: int = 1,
        **model_kwargs: Any,
    ) -> Completions:
        """``num_return_sequences`` completions per prompt, rows in group order (p0 x G, p1 x G, ...).

        prompt_inputs: left-padded processor output (or its text part, with the encoded vision in
        ``model_kwargs["mm_encoder_outputs"]``). model_kwargs: passed to ``generate`` (e.g.
        ``synced_gpus`` under ZeRO-3).
        """
        was_training = model.training
        model.eval()
        sampling = (
            {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k}
            if settings.do_sample
            else {}
        )
        try:
            output = model.generate(
                **prompt_inputs,
                max_new_tokens=settings.max_new_tokens,
                do_sample=settings.do_sample,
                num_return_sequences=num_return_sequences,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.end_of_turn_id,
                use_cache=True,
                **sampling,
                **model_kwargs,
            )
        finally:
            model.train(was_training)
        ids = output[:, prompt_inputs["input_ids"].shape[1] :]
        mask = completion_mask(
            ids, self.end_of_turn_id, self.mask_truncated, pad_token_id=self.tokenizer.pad_token_id
        )
        texts = self.tokenizer.batch_decode(
            torch.where(mask.bool(), ids, self.tokenizer.pad_token_id), skip_special_tokens=True
        )
        return Completions(ids, mask, texts)

    def logps(
        self, logits_of: Callable[[dict[str, Any]], Tensor], rollout: Rollout, temperature: float
    ) -> Tensor:
        """Per-token log-probs ``[N, C]`` of the rollout's completions under ``logits_of(inputs)``
        (a model's forward returning logits), in micro-batches of rows, at the sampling temperature.

        Grad flows when the caller's ``logits_of`` and grad mode allow it.
        """
        parts = []
        length = rollout.completion_ids.shape[1]
        for rows in micro_batches(rollout.completion_ids.shape[0], self.logprob_micro_batch_size):
            inputs, _ = rollout.model_inputs(range(rows.start, rows.stop))
            # Logits at position t predict token t + 1; only the C + 1 last positions are needed, and
            # asking for those alone avoids a [rows, P + C, vocab] tensor (151,936 columns).
            inputs["logits_to_keep"] = length + 1
            logits = logits_of(inputs)[:, :-1]
            parts.append(token_logps(logits, rollout.completion_ids[rows], temperature))
        return torch.cat(parts)
