"""How a case becomes the model's video, prompt and answer (:class:`BratsRender`, :func:`make_sample`).

Boxes and the peak slice the model is trained on are in the coordinates of the frames it sees,
mapped from voxels by :func:`vlmlab.tasks.coords.voxel_box_to_frame`; the target keeps both and the
:class:`~vlmlab.tasks.coords.FrameGeometry` that links them. The frame size is fitted to the model's
:class:`~vlmlab.models.facts.VisionGeometry` (:func:`fit_render`) so that the processor does not
resize the frames again, which would move every box.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vlmlab.data.sample import Sample
from vlmlab.data.volume import VolumeFrames, VolumeWindow
from vlmlab.models.facts import VisionGeometry
from vlmlab.tasks.brats_detection import PROMPT, BratsTarget, format_answer, format_prompt
from vlmlab.tasks.coords import (
    FrameGeometry,
    Layout,
    layout_frames,
    nearest_frame,
    outer_int_box,
    voxel_box_to_frame,
)

__all__ = ["DEFAULT_FRAMES", "BratsRender", "fit_render", "make_sample"]

log = logging.getLogger(__name__)

# MRI: each modality windowed to its own 0.5-99.5 percentiles of non-zero (brain) voxels.
DEFAULT_FRAMES = VolumeFrames(num_frames=32, window=VolumeWindow("percentile", 0.5, 99.5))
DEFAULT_SIZE = (224, 224)  # a modality's frame size when frames.size is None, before fitting


@dataclass(frozen=True)
class BratsRender:
    """How a case becomes the model's video, prompt and answer.

    frames: per-modality volume -> frames (temporal resampling, spatial size, intensity window, fps).
    layout: ``sequence`` (modalities one after another) or ``tiled`` (a ``grid`` of tiles per frame).
    slice_axis: the NIfTI axis that becomes time (2: axial slices, as the BraTS recipe).
    prompt: the user text, a ``str.format`` template with fields layout, pane, width, height, last_frame.
    """

    frames: VolumeFrames = DEFAULT_FRAMES
    layout: Layout = "sequence"
    grid: tuple[int, int] | None = None
    slice_axis: int = 2
    prompt: str = PROMPT

    def __post_init__(self) -> None:
        FrameGeometry((2, 2, 2), slice_axis=self.slice_axis, layout=self.layout, grid=self.grid)  # fail early
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(v) for v in self.grid))

    def geometry(
        self, stack_shape: Sequence[int], num_modalities: int, slice_axis: int | None = None
    ) -> FrameGeometry:
        """The geometry of a case whose modalities are slice stacks of shape ``[D, H, W]``."""
        return FrameGeometry(
            volume_shape=tuple(stack_shape),
            slice_axis=self.slice_axis if slice_axis is None else slice_axis,
            num_frames=self.frames.num_frames,
            temporal_method=self.frames.temporal_method,
            size=None if self.frames.size is None else tuple(self.frames.size),
            num_modalities=num_modalities,
            layout=self.layout,
            grid=self.grid,
        )

    def video(
        self, stacks: Sequence[np.ndarray], geometry: FrameGeometry, window: VolumeWindow | None = None
    ) -> np.ndarray:
        """Slice stacks ``[D, H, W]`` (one per modality) -> the model's uint8 video ``[T, H', W', 3]``."""
        frames = self.frames if window is None else dataclasses.replace(self.frames, window=window)
        return layout_frames([frames(np.ascontiguousarray(s)) for s in stacks], geometry)

    def max_geometry(self, num_modalities: int) -> FrameGeometry:
        """The largest video this render makes of ``num_modalities`` modalities (``num_frames`` slices
        each at ``size``): what a case costs at most, and the shape the frame size is fitted on."""
        size = tuple(self.frames.size) if self.frames.size is not None else DEFAULT_SIZE
        return self.geometry((self.frames.num_frames or 32, *size), num_modalities)


def fit_render(render: BratsRender, vision: VisionGeometry, num_modalities: int = 4) -> BratsRender:
    """``render`` with a frame size the model's video processor keeps unchanged, so boxes mapped to
    our frames are the coordinates the model sees (``preset=tiny`` bounds frames to 56x56 pixels)."""
    geometry = render.max_geometry(num_modalities)
    size = geometry.tile_size
    tile = vision.fit_video_frame(geometry.total_frames, *size, grid=geometry.grid or (1, 1))
    if tile == size and render.frames.size is not None:
        return render
    if tile != size:
        log.info(
            "frames resized from %sx%s to %sx%s so that the processor keeps them as they are", *size, *tile
        )
    return replace(render, frames=replace(render.frames, size=tile))


def make_sample(
    sample_id: str,
    video: np.ndarray,
    geometry: FrameGeometry,
    names: Sequence[str],
    voxel_box: Sequence[float],
    peak_voxel: int,
    ratio: float,
    render: BratsRender,
    metadata: dict[str, Any],
) -> Sample:
    """Assemble the sample: prompt, answer and target in the model's frame coordinates."""
    frame_box = voxel_box_to_frame(voxel_box, geometry)
    peak = nearest_frame(peak_voxel, geometry)
    target = BratsTarget(
        bbox_3d=frame_box,
        peak_slice=peak,
        tumor_ratio=float(ratio),
        bbox_3d_voxel=[float(v) for v in voxel_box],
        peak_slice_voxel=int(peak_voxel),
        geometry=geometry.to_dict(),
    )
    return Sample(
        id=sample_id,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": video, "fps": render.frames.fps},
                    {"type": "text", "text": format_prompt(names, geometry, render.prompt)},
                ],
            }
        ],
        target=target.as_dict(),
        answer=format_answer(outer_int_box(frame_box), peak, ratio),
        metadata={**metadata, "modalities": list(names)},
    )
