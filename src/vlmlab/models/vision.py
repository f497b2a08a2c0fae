"""Run the vision tower once per prompt and reuse its output (transformers' ``mm_encoder_outputs``).

With a frozen vision tower, a GRPO step needs the same vision features for the G rollouts of a
prompt and for the policy, old and reference log-prob passes. :func:`encode_media` computes them
once (no grad) from the prompt batch; :func:`reorder_media` / :func:`reorder_inputs` then lay them
out for any arrangement of rows (G copies per prompt in group order, or a micro-batch of rows),
and they reach the model as ``mm_encoder_outputs`` instead of pixels.

Processor outputs mix per-row tensors (``input_ids [B, L]``) with per-item tensors (one row per
image or video: ``*_grid_thw [N, 3]``; ``pixel_values* [sum of patches, D]``); a row owns a run of
consecutive items, counted by :func:`items_per_row`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel

MODALITIES = ("image", "video")
PIXEL_KEYS = {"image": "pixel_values", "video": "pixel_values_videos"}
GRID_KEYS = {"image": "image_grid_thw", "video": "video_grid_thw"}
ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")
ITEM_KEYS = {"image_grid_thw": "image", "video_grid_thw": "video", "second_per_grid_ts": "video"}


def _inner(model: PreTrainedModel | PeftModel) -> torch.nn.Module:
    """The multimodal model (``Qwen*VLModel``) that owns ``get_{image,video}_features``."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    return model.model


def placeholder_ids(model: PreTrainedModel | PeftModel) -> dict[str, int]:
    return {"image": model.config.image_token_id, "video": model.config.video_token_id}


@torch.no_grad()
def encode_media(model: PreTrainedModel | PeftModel, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Vision encoder outputs of every image and video in ``inputs``: one tower call per modality.

    Returns ``{modality: ModelOutput}``; ``pooler_output`` is a tuple with one ``[tokens_i, D]``
    tensor per item (Qwen3-VL adds ``deepstack_features``: a list over layers of such tuples).
    """
    inner = _inner(model)
    outputs = {}
    for modality in MODALITIES:
        if inputs.get(PIXEL_KEYS[modality]) is not None:
            encode = getattr(inner, f"get_{modality}_features")
            outputs[modality] = encode(
                inputs[PIXEL_KEYS[modality]], inputs[GRID_KEYS[modality]], return_dict=True
            )
    return outputs


def items_per_row(input_ids: torch.Tensor, token_id: int, item_tokens: Sequence[int]) -> list[int]:
    """How many consecutive items of the flat item list belong to each row of ``input_ids`` [B, L].

    ``item_tokens``: the placeholder tokens of each item, in order; a row holds as many placeholder
    tokens as its items together.
    """
    counts, start = [], 0
    for row_tokens in (input_ids == token_id).sum(-1).tolist():
        taken, n = 0, 0
        while taken < row_tokens:
            if start + n >= len(item_tokens):
                raise ValueError(f"a row has {row_tokens} placeholder tokens but the vision items ran out")
            taken += item_tokens[start + n]
            n += 1
        if taken != row_tokens:
            raise ValueError(f"vision items do not add up to the {row_tokens} placeholder tokens of a row")
        counts.append(n)
        start += n
    if start != len(item_tokens):
        raise ValueError(f"{len(item_tokens) - start} vision item(s) left over after the last row")
    return counts


def item_counts(
    inputs: dict[str, torch.Tensor], token_ids: dict[str, int], merge_size: int = 2
) -> dict[str, list[int]]:
    """Items per row for each modality present in ``inputs`` (from the grids)."""
    counts = {}
    for modality in MODALITIES:
        grid = inputs.get(GRID_KEYS[modality])
        if grid is not None:
            tokens = (grid.prod(-1) // merge_size**2).tolist()
            counts[modality] = items_per_row(inputs["input_ids"], token_ids[modality], tokens)
    return counts


def _reorder(items: Sequence[Any], counts: Sequence[int], rows: Sequence[int]) -> list[Any]:
    """The items of ``rows`` (row indices, repeats allowed) in that order."""
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    return [item for r in rows for item in items[starts[r] : starts[r + 1]]]


def reorder_inputs(
    inputs: dict[str, torch.Tensor], counts: dict[str, list[int]], rows: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Processor inputs for ``rows`` (indices into the batch, repeats allowed), items carried along."""
    index = torch.as_tensor(list(rows), device=inputs["input_ids"].device)
    out = {k: inputs[k].index_select(0, index) for k in ROW_KEYS if k in inputs}
    for key, modality in ITEM_KEYS.items():
        if key in inputs:
            out[key] = torch.stack(_reorder(list(inputs[key]), counts[modality], rows))
    for modality, key in PIXEL_KEYS.items():
        if key in inputs:
            patches = inputs[GRID_KEYS[modality]].prod(-1).tolist()
            out[key] = torch.cat(_reorder(list(inputs[key].split(patches)), counts[modality], rows))
    return out


def reorder_media(media: dict[str, Any], counts: dict[str, list[int]], rows: Sequence[int]) -> dict[str, Any]:
    """Copies of encoder outputs laid out for ``rows``; the input is not modified (``generate``
    expands the outputs it is given in place)."""
    out = {}
    for modality, output in media.items():
        new = copy.copy(output)
        new.pooler_output = tuple(_reorder(output.pooler_output, counts[modality], rows))
        if getattr(output, "deepstack_features", None) is not None:
            new.deepstack_features = [
                tuple(_reorder(layer, counts[modality], rows)) for layer in output.deepstack_features
            ]
        out[modality] = new
    return out


def text_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inputs`` without pixels (grids stay: the model needs them for its 3-D positions)."""
    return {k: v for k, v in inputs.items() if k not in PIXEL_KEYS.values()}


def grouped_rows(batch_size: int, repeats: int) -> list[int]:
    """Row order of ``repeats`` copies per row, in group order: 0,0,..,1,1,.. (as ``generate``)."""
    return [r for r in range(batch_size) for _ in range(repeats)]
