"""What data and collation need to know about the model, read once from its processor.

A data source must size frames so that the processor keeps them, count the vision tokens a sample
costs, and know the model's temporal patch; a collator must find the assistant's turn in the chat.
These facts belong to the model, so they live here and are passed in explicitly
(:func:`vlmlab.run.build`); nothing outside ``models/`` spells a Qwen token or a patch size.

The resize rules are transformers' own ``smart_resize`` functions, applied with the pixel budget the
processors apply (``tests/test_model_facts.py`` checks every count against the processor itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as smart_resize_frame
from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as smart_resize_clip

__all__ = ["QWEN_CHAT", "ChatFormat", "ModelFacts", "VisionGeometry"]

Family = Literal["qwen2_5_vl", "qwen3_vl"]


@dataclass(frozen=True)
class ChatFormat:
    """The chat template's markers: the text that opens an assistant turn and the token that ends a turn."""

    assistant_header: str
    end_of_turn: str

    def assistant_header_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        return list(tokenizer.encode(self.assistant_header, add_special_tokens=False))

    def end_of_turn_id(self, tokenizer: PreTrainedTokenizerBase) -> int:
        return int(tokenizer.convert_tokens_to_ids(self.end_of_turn))


QWEN_CHAT = ChatFormat(assistant_header="<|im_start|>assistant\n", end_of_turn="<|im_end|>")


@dataclass(frozen=True)
class VisionGeometry:
    """How the processor resizes images and videos, and how many vision tokens they become.

    patch_size: pixels per patch side (Qwen2.5-VL 14, Qwen3-VL 16); merge_size: patches merged per
    token side (2); temporal_patch_size: frames per temporal patch (2).
    image_pixels / video_pixels: ``(min, max)`` pixel budgets of the image and video processors.
    cap_pixels_per_frame / max_video_tokens: the video processor's per-frame cap (qwen-vl-utils').
    """

    family: Family
    patch_size: int
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_pixels: tuple[int, int] = (56 * 56, 28 * 28 * 1280)
    video_pixels: tuple[int, int] = (128 * 28 * 28, 28 * 28 * 768)
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 768

    @classmethod
    def from_processor(cls, family: Family, processor: Any) -> VisionGeometry:
        image, video = processor.image_processor, processor.video_processor
        return cls(
            family=family,
            patch_size=int(video.patch_size),
            merge_size=int(video.merge_size),
            temporal_patch_size=int(video.temporal_patch_size),
            image_pixels=(int(image.size["shortest_edge"]), int(image.size["longest_edge"])),
            video_pixels=(int(video.size["shortest_edge"]), int(video.size["longest_edge"])),
            cap_pixels_per_frame=bool(getattr(video, "cap_pixels_per_frame", False)),
            max_video_tokens=int(getattr(video, "max_video_tokens", 768)),
        )

    @property
    def factor(self) -> int:
        """Pixels per vision-token side: frame sizes the processor keeps are multiples of it."""
        return self.patch_size * self.merge_size

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the image processor resizes a ``height x width`` image to."""
        low, high = self.image_pixels
        return smart_resize_frame(height, width, self.factor, min_pixels=low, max_pixels=high)

    def video_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` the video processor resizes ``num_frames`` frames of ``height x width`` to."""
        low, high = self.video_pixels
        if self.family == "qwen3_vl":
            # Qwen3-VL budgets pixels for the whole clip (num_frames x h x w).
            if self.cap_pixels_per_frame:
                per_frame = max(
                    min(self.max_video_tokens * self.factor**2, high // num_frames), int(low * 1.05)
                )
                high = per_frame * num_frames
            frames = max(num_frames, self.temporal_patch_size)
            return smart_resize_clip(
                frames, height, width, self.temporal_patch_size, self.factor, min_pixels=low, max_pixels=high
            )
        if self.cap_pixels_per_frame:
            budget = int(self.max_video_tokens * self.factor * self.factor * 0.9)
            high = max(min(high, budget * self.temporal_patch_size // num_frames), int(low * 1.05))
        return smart_resize_frame(height, width, self.factor, min_pixels=low, max_pixels=high)

    def temporal_patches(self, num_frames: int) -> int:
        """Temporal positions of ``num_frames`` frames (padded to a multiple of the temporal patch)."""
        return -(-num_frames // self.temporal_patch_size)

    def image_tokens(self, height: int, width: int) -> int:
        """Vision tokens of one image of ``height x width``."""
        h, w = self.image_size(height, width)
        return (h // self.factor) * (w // self.factor)

    def video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Vision tokens of a video of ``num_frames`` frames of ``height x width``."""
        h, w = self.video_size(num_frames, height, width)
        return self.temporal_patches(num_frames) * (h // self.factor) * (w // self.factor)

    def fit_video_frame(
        self, num_frames: int, height: int, width: int, grid: tuple[int, int] = (1, 1), max_rounds: int = 4
    ) -> tuple[int, int]:
        """A tile size near ``height x width`` whose frames (``grid`` tiles each) the video processor
        keeps exactly as they are, so coordinates mapped to our frames are the ones the model sees.

        Starting from the given tile, take the processor's size for the tiled frame, divide it by the
        grid, and repeat until it no longer changes. Raises ValueError if it does not settle.
        """
        rows, cols = grid
        tile_h, tile_w = height, width
        for _ in range(max_rounds):
            out_h, out_w = self.video_size(num_frames, rows * tile_h, cols * tile_w)
            if (out_h, out_w) == (rows * tile_h, cols * tile_w):
                return tile_h, tile_w
            tile_h, tile_w = max(1, out_h // rows), max(1, out_w // cols)
        raise ValueError(
            f"no frame size of a {rows}x{cols} grid survives the processor unchanged (last tile {tile_h}x{tile_w}): "
            f"set data.frames.size to a multiple of {self.factor} within the video pixel budget {self.video_pixels}"
        )


@dataclass(frozen=True)
class ModelFacts:
    """The model facts that data and collation receive: its vision geometry and its chat markers."""

    vision: VisionGeometry
    chat: ChatFormat = QWEN_CHAT
