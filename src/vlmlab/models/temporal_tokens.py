"""Temporal tokens ``<0>``..``<999>`` (the grounding recipe, ``use_temporal_tokens``): one token per time bin.

:func:`add_temporal_tokens` puts them in the tokenizer; :func:`init_temporal_embeddings` grows the
model's embeddings to hold them and initialises their rows (seed: ``embedding_init_strategy``).
The answer format that uses them is :func:`vlmlab.tasks.grounding.format_span`.
"""

from __future__ import annotations

from typing import Literal

import torch
from transformers import AddedToken, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "TEMPORAL_TOKENS",
    "InitStrategy",
    "add_temporal_tokens",
    "init_temporal_embeddings",
    "sinusoidal_embeddings",
]

TEMPORAL_TOKENS = [f"<{i}>" for i in range(1000)]
InitStrategy = Literal["sinusoidal", "mean", "random"]


def add_temporal_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Add ``<0>``..``<999>`` to ``tokenizer`` (idempotent); return their ids in order.

    They are *normal* added tokens, not special ones: the tokenizer still matches each as one
    token (``"<12>"`` -> one id, longest match first so ``<100>`` is not ``<10>`` + ``0>``), and
    ``decode(..., skip_special_tokens=True)``, which generation decoding uses, keeps them in the
    text. ``normalized=False`` and no strip: the text decodes back exactly (a space before a
    token stays a separate space token).
    """
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in TEMPORAL_TOKENS])
    ids = tokenizer.convert_tokens_to_ids(TEMPORAL_TOKENS)
    unknown = tokenizer.unk_token_id
    if any(i is None or (unknown is not None and i == unknown) for i in ids):
        raise RuntimeError("the tokenizer did not accept the temporal tokens <0>..<999>")
    return list(ids)


def sinusoidal_embeddings(num_positions: int, dim: int) -> torch.Tensor:
    """The transformer's sinusoidal position table, float32 [num_positions, dim].

    ``E[p, 2i] = sin(p / 10000^(2i / dim))`` and ``E[p, 2i + 1] = cos(p / 10000^(2i / dim))``
    (Vaswani et al. 2017); for an odd ``dim`` the last column is a sine. Computed in float64.
    """
    if num_positions < 0 or dim < 1:
        raise ValueError(f"need num_positions >= 0 and dim >= 1, got {num_positions}, {dim}")
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    even = torch.arange(0, dim, 2, dtype=torch.float64)  # 2i
    angle = position / torch.pow(10000.0, even / dim)  # [P, ceil(dim / 2)]
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table.float()


def _new_rows(
    existing: torch.Tensor, count: int, strategy: InitStrategy, generator: torch.Generator
) -> torch.Tensor:
    """float32 [count, dim] rows for new tokens, from the statistics of the ``existing`` rows [N, dim]."""
    existing = existing.detach().float()
    dim = existing.shape[1]
    if strategy == "mean":
        return existing.mean(0, keepdim=True).expand(count, dim).clone()
    std = existing.std().item()
    if strategy == "random":
        return torch.randn(count, dim, generator=generator) * std
    table = sinusoidal_embeddings(count, dim)
    return table * (std / table.std().item())


@torch.no_grad()
def init_temporal_embeddings(
    model: PreTrainedModel,
    token_ids: list[int],
    strategy: InitStrategy = "sinusoidal",
    vocab_size: int | None = None,
    seed: int = 0,
) -> None:
    """Make room for the temporal tokens in ``model`` and initialise their embedding rows.

    token_ids: the ids of ``<0>``..``<999>`` in order (from :func:`add_temporal_tokens`).
    vocab_size: the tokenizer's length (``len(tokenizer)``); default ``max(token_ids) + 1``.
        The embeddings grow to it only when they are smaller: Qwen-VL checkpoints have spare rows
        (151,936 for a 151,669-token tokenizer), and they never shrink.
    strategy:
        "sinusoidal": row ``k`` (token ``<k>``) is the sinusoidal position ``k``
            (:func:`sinusoidal_embeddings`), scaled so that the table's std equals the std of the
            existing rows: neighbouring times start with similar embeddings;
        "mean": every row is the mean of the existing rows (a neutral start; the tokens are told
            apart only by training);
        "random": normal with mean 0 and the std of the existing rows, from ``seed``.
    "Existing rows" are the ids below ``min(token_ids)`` (the tokenizer's own tokens; Qwen's
    untrained spare rows are excluded). The output embedding (lm_head) gets its rows the same way
    from its own statistics when it is not tied to the input embedding.
    """
    if strategy not in ("sinusoidal", "mean", "random"):
        raise ValueError(f"unknown embedding init strategy {strategy!r}; expected sinusoidal, mean or random")
    if not token_ids:
        raise ValueError("no token ids to initialise")
    first = min(token_ids)
    if first < 1:
        raise ValueError("temporal token ids must come after the tokenizer's own tokens")
    needed = max(max(token_ids) + 1, vocab_size or 0)
    if model.get_input_embeddings().weight.shape[0] < needed:
        model.resize_token_embeddings(needed, mean_resizing=False)
    generator = torch.Generator().manual_seed(seed)  # CPU: the same rows on any device
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not weights[0]:
        weights.append(output.weight)
    for weight in weights:
        rows = _new_rows(weight[:first], len(token_ids), strategy, generator)
        ids = torch.tensor(token_ids, dtype=torch.long, device=weight.device)
        weight[ids] = rows.to(device=weight.device, dtype=weight.dtype)
