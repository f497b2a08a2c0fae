"""Generation shared by SFT validation, evaluation and GRPO rollouts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase


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
    num_return_sequences: int = 1


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_inputs: dict[str, torch.Tensor],
    settings: GenerationSettings,
) -> tuple[torch.Tensor, list[str]]:
    """Generate from left-padded prompts in eval mode with the KV cache.

    Returns the completion token ids [B * num_return_sequences, C] (padded after EOS with the pad
    id) and their decoded texts (special tokens removed).
    """
    was_training = model.training
    model.eval()
    try:
        sampling = (
            {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": settings.top_k}
            if settings.do_sample
            else {}
        )
        output = model.generate(
            **prompt_inputs,
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            num_return_sequences=settings.num_return_sequences,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            use_cache=True,
            **sampling,
        )
    finally:
        model.train(was_training)
    completion_ids = output[:, prompt_inputs["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return completion_ids, texts
