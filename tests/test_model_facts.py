"""The model's facts (vision geometry, chat markers) agree with the processor they are read from."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers.video_utils import VideoMetadata

from vlmlab.models.facts import QWEN_CHAT, VisionGeometry
from vlmlab.models.processor import offline_processor

FAMILIES = ("qwen2_5_vl", "qwen3_vl")
# (frames, height, width): small and large frames, odd frame counts, frames the per-frame cap shrinks.
VIDEOS = [(2, 56, 56), (8, 64, 48), (7, 100, 180), (32, 224, 224), (64, 384, 384), (3, 30, 500)]
IMAGES = [(28, 28), (64, 48), (100, 180), (480, 640)]


def processor_video_grid(processor, frames: int, height: int, width: int) -> tuple[int, int, int]:
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    metadata = VideoMetadata(total_num_frames=frames, fps=1.0, frames_indices=list(range(frames)))
    out = processor.video_processor(
        videos=[video], do_sample_frames=False, video_metadata=[metadata], return_tensors="pt"
    )
    return tuple(int(v) for v in out["video_grid_thw"][0])


def processors() -> list[tuple[str, object]]:
    """Each family at the tiny preset's pixel bounds and at a real model's (where the cap acts)."""
    return [
        (family, offline_processor(family, low, high))
        for family in FAMILIES
        for low, high in ((784, 4096), (3136, 1003520))
    ]


@pytest.mark.parametrize(("family", "processor"), processors(), ids=lambda v: v if isinstance(v, str) else "")
def test_video_size_and_tokens_equal_the_processor(family: str, processor) -> None:
    vision = VisionGeometry.from_processor(family, processor)
    merge = vision.merge_size
    for frames, height, width in VIDEOS:
        t, gh, gw = processor_video_grid(processor, frames, height, width)
        assert vision.video_size(frames, height, width) == (gh * vision.patch_size, gw * vision.patch_size)
        assert vision.video_tokens(frames, height, width) == t * gh * gw // merge**2


@pytest.mark.parametrize(("family", "processor"), processors(), ids=lambda v: v if isinstance(v, str) else "")
def test_image_size_and_tokens_equal_the_processor(family: str, processor) -> None:
    vision = VisionGeometry.from_processor(family, processor)
    for height, width in IMAGES:
        out = processor.image_processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")
        _, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        assert vision.image_size(height, width) == (gh * vision.patch_size, gw * vision.patch_size)
        assert vision.image_tokens(height, width) == gh * gw // vision.merge_size**2


UNBOUNDED = (1, 10**9)  # pixel budgets that never bind: only the rounding to multiples of patch x merge


@pytest.mark.parametrize(
    ("family", "patch", "video", "expected"),
    [
        ("qwen2_5_vl", 14, (32, 364, 364), 16 * 13 * 13),  # the report recipe's volumes: 364 / 28 = 13
        ("qwen2_5_vl", 14, (3, 100, 150), 2 * 4 * 5),  # ceil(3/2) = 2; 100/28 = 3.6 -> 4; 150/28 = 5.4 -> 5
        ("qwen3_vl", 16, (32, 364, 364), 16 * 11 * 11),  # Qwen3-VL patch 16: 364 / 32 = 11.4 -> 11
        ("qwen3_vl", 16, (5, 64, 96), 3 * 2 * 3),  # ceil(5/2) = 3 temporal patches
    ],
)
def test_video_tokens_by_hand(family: str, patch: int, video: tuple, expected: int) -> None:
    vision = VisionGeometry(family, patch, image_pixels=UNBOUNDED, video_pixels=UNBOUNDED)  # type: ignore[arg-type]
    assert vision.video_tokens(*video) == expected
    assert vision.image_tokens(224, 224) == (224 // vision.factor) ** 2


def test_families_differ_in_patch_size(tiny_vision: dict) -> None:
    assert tiny_vision["qwen2_5_vl"].patch_size == 14 and tiny_vision["qwen3_vl"].patch_size == 16
    assert tiny_vision["qwen2_5_vl"].factor == 28 and tiny_vision["qwen3_vl"].factor == 32
    # Qwen2.5-VL budgets pixels per frame: 8 frames of 56x56 stay 56x56, 2x2 tokens per temporal patch.
    assert tiny_vision["qwen2_5_vl"].video_tokens(8, 56, 56) == 4 * 2 * 2
    # Qwen3-VL budgets the clip: 8 x 64 x 64 pixels exceed 8 x 823 (the per-frame floor 1.05 x 784), so
    # the frames shrink to one token side, 32x32: 1 token per temporal patch.
    assert tiny_vision["qwen3_vl"].video_size(8, 64, 64) == (32, 32)
    assert tiny_vision["qwen3_vl"].video_tokens(8, 64, 64) == 4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("frames", "size", "grid"), [(8, (50, 70), (1, 1)), (16, (30, 30), (2, 2)), (4, (200, 90), (1, 2))]
)
def test_fitted_frames_pass_the_processor_unchanged(
    family: str, frames: int, size: tuple[int, int], grid: tuple[int, int], tiny_processors: dict
) -> None:
    processor = tiny_processors[family]
    vision = VisionGeometry.from_processor(family, processor)
    tile_h, tile_w = vision.fit_video_frame(frames, *size, grid=grid)
    height, width = grid[0] * tile_h, grid[1] * tile_w
    _, gh, gw = processor_video_grid(processor, frames, height, width)
    assert (gh * vision.patch_size, gw * vision.patch_size) == (height, width)


def test_chat_markers_are_the_tokenizer_tokens(tiny_processors: dict) -> None:
    tokenizer = tiny_processors["qwen2_5_vl"].tokenizer
    end = QWEN_CHAT.end_of_turn_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens(end) == QWEN_CHAT.end_of_turn
    assert tokenizer.decode(QWEN_CHAT.assistant_header_ids(tokenizer)) == QWEN_CHAT.assistant_header
