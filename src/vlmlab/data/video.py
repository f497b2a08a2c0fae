"""Video files (mp4, ...) -> uint8 RGB frames for Qwen-VL video inputs (the grounding recipe, ``video:`` config).

:func:`read_video` opens a file with decord, trims it to ``[start, end]`` (the grounding recipe's
``video_start`` / ``video_end``, absolute seconds in the file), picks at most ``max_frames``
frames with :func:`sample_frame_indices` and decodes only those, resized by decord's scaler.

Frame ``i`` of a file is taken to start at ``i / native_fps`` (constant frame rate, what decord's
``get_avg_fps`` reports); the frames of a clip ``[start, end)`` are those starting in it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from vlmlab.data.volume import spatial_resize

if TYPE_CHECKING:
    import decord

__all__ = [
    "DecodedVideo",
    "Sampling",
    "VideoError",
    "VideoFrames",
    "clip_frames",
    "open_video",
    "read_video",
    "sample_frame_indices",
]

Sampling = Literal["uniform", "random", "keyframe"]
_SAMPLINGS = ("uniform", "random", "keyframe")
# Frame positions are computed in float seconds * fps; this absorbs their rounding noise
# (e.g. 1.5 s * 4 fps = 5.999999 must be frame 6, not 5).
_EPS = 1e-6


class VideoError(ValueError):
    """A video file is missing, unreadable, empty, or the requested trim lies outside it."""


@dataclass(frozen=True)
class VideoFrames:
    """How a video becomes frames (configured in ``conf/data``; the recipe's ``video:`` section).

    max_frames: at most this many frames per clip (fewer when the clip has fewer).
    sampling: "uniform" (evenly spaced, both ends included), "random" (one random frame in each
        of ``max_frames`` equal segments, sorted: TSN-style augmentation), or "keyframe" (the
        file's keyframes, evenly subsampled; falls back to "uniform" when the clip has fewer
        keyframes than frames wanted, see :func:`sample_frame_indices`).
    fps: 0 samples from every frame of the clip; > 0 first resamples the clip's timeline at this
        rate (never above the file's own rate), then caps it to ``max_frames``.
    height / width: decoded frame size; None keeps that dimension of the file.
    """

    max_frames: int = 32
    sampling: Sampling = "uniform"
    fps: float = 0.0
    height: int | None = 384
    width: int | None = 384

    def __post_init__(self) -> None:
        # Fail at config time, not inside a dataloader worker.
        if self.max_frames < 1:
            raise ValueError(f"video max_frames must be >= 1, got {self.max_frames}")
        if self.sampling not in _SAMPLINGS:
            raise ValueError(
                f"unknown video sampling {self.sampling!r}; expected uniform, random or keyframe"
            )
        if not (self.fps >= 0 and math.isfinite(self.fps)):
            raise ValueError(f"video fps must be 0 (original) or > 0, got {self.fps}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"video {name} must be >= 1 or null (original), got {value}")


@dataclass
class DecodedVideo:
    """Frames of one (trimmed) clip.

    frames: uint8 [T, H, W, 3].
    timestamps: float64 [T], seconds from the start of the trimmed clip to the start of each frame.
    indices: int64 [T], frame indices in the file.
    fps: mean rate of the sampled frames, ``T / duration`` (what the processor is told, so that
        frame ``k`` sits at about ``k / fps`` seconds).
    duration: length of the trimmed clip in seconds.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    fps: float
    duration: float


def _evenly(count: int, wanted: int) -> np.ndarray:
    """``wanted`` positions in ``range(count)``, evenly spaced with both ends: round(linspace(0, count-1, wanted)).

    Rounding is numpy's (half to even), the same as ``torch.round`` in qwen-vl-utils and volume.py.
    """
    return np.rint(np.linspace(0, count - 1, wanted)).astype(np.int64)


def sample_frame_indices(
    num_frames_total: int,
    native_fps: float,
    settings: VideoFrames,
    start_frame: int,
    end_frame: int,
    rng: np.random.Generator | None = None,
    keyframes: np.ndarray | list[int] | None = None,
) -> np.ndarray:
    """The file frame indices to decode for the clip ``[start_frame, end_frame)``: sorted, unique int64 [T].

    1. Timeline: every frame of the clip, or with ``settings.fps`` > 0 (and below ``native_fps``)
       the frame showing at each time ``k / fps`` from the clip start:
       ``start_frame + floor(k * native_fps / fps)`` for every such index inside the clip.
    2. Budget ``m = min(max_frames, len(timeline))``; a timeline within budget is returned whole.
    3. "uniform": ``timeline[round(linspace(0, len - 1, m))]``.
       "random": the timeline cut into ``m`` segments ``[floor(i*len/m), floor((i+1)*len/m))``,
       one uniformly random position in each (needs ``rng``).
       "keyframe": the keyframes inside the clip (ignoring the fps timeline, since keyframes have
       their own spacing), evenly subsampled to ``m`` when there are at least ``m`` of them;
       otherwise "uniform" (fewer keyframes would silently shrink the frame budget).
    """
    if num_frames_total < 1 or not native_fps > 0:
        raise ValueError(
            f"need a video with frames and a frame rate, got {num_frames_total} frames at {native_fps} fps"
        )
    if not 0 <= start_frame < end_frame <= num_frames_total:
        raise ValueError(
            f"need 0 <= start_frame < end_frame <= {num_frames_total}, got {start_frame}, {end_frame}"
        )
    count = end_frame - start_frame
    if 0 < settings.fps < native_fps:
        step = native_fps / settings.fps  # file frames per resampled frame (> 1)
        steps = math.floor((count - _EPS) / step) + 1  # every k with k * step < count
        timeline = start_frame + np.floor(np.arange(steps) * step + _EPS).astype(np.int64)
    else:
        timeline = np.arange(start_frame, end_frame, dtype=np.int64)
    wanted = min(settings.max_frames, len(timeline))
    if settings.sampling == "keyframe":
        if keyframes is None:
            raise ValueError("keyframe sampling needs the file's keyframe indices")
        keys = np.unique(np.asarray(keyframes, dtype=np.int64))
        keys = keys[(keys >= start_frame) & (keys < end_frame)]
        if len(keys) >= wanted:
            return keys[_evenly(len(keys), wanted)]
        return timeline[_evenly(len(timeline), wanted)]
    if len(timeline) <= settings.max_frames:
        return timeline
    if settings.sampling == "random":
        if rng is None:
            raise ValueError("random frame sampling needs an rng (np.random.Generator)")
        bounds = np.floor(np.arange(wanted + 1) * len(timeline) / wanted).astype(np.int64)
        return timeline[rng.integers(bounds[:-1], bounds[1:])]
    return timeline[_evenly(len(timeline), wanted)]


def _decord_error(error: Exception) -> str:
    # decord's messages carry a C++ backtrace after the first line.
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def open_video(path: str | Path, height: int | None = None, width: int | None = None) -> decord.VideoReader:
    """A decord ``VideoReader`` on ``path`` (frames resized to height x width; None keeps the file's),
    or a :class:`VideoError` naming the path."""
    import decord  # imported here: a heavy native library only video sources need

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    try:
        reader = decord.VideoReader(str(path), width=width or -1, height=height or -1)
    except (RuntimeError, decord.DECORDError) as error:
        raise VideoError(f"{path}: cannot open video ({_decord_error(error)})") from error
    if len(reader) < 1 or not reader.get_avg_fps() > 0:
        raise VideoError(
            f"{path}: no frames or no frame rate ({len(reader)} frames at {reader.get_avg_fps()} fps)"
        )
    return reader


def clip_frames(
    num_frames_total: int, native_fps: float, start: float | None, end: float | None
) -> tuple[int, int, float, float]:
    """``(start_frame, end_frame, clip_start, clip_end)`` of the trim ``[start, end]`` seconds.

    ``end`` beyond the file is clamped to the file's end; the clip's frames are those starting in
    ``[clip_start, clip_end)``. Raises ValueError when the trim holds no frame.
    """
    file_duration = num_frames_total / native_fps
    clip_start = 0.0 if start is None else float(start)
    clip_end = file_duration if end is None else min(float(end), file_duration)
    if clip_start < 0 or not clip_start < clip_end:
        raise ValueError(f"trim [{start}, {end}] s holds no part of the video (0 to {file_duration:.3f} s)")
    start_frame = math.ceil(clip_start * native_fps - _EPS)
    end_frame = min(num_frames_total, math.ceil(clip_end * native_fps - _EPS))
    if start_frame >= end_frame:
        raise ValueError(f"trim [{start}, {end}] s holds no frame of the video ({native_fps:g} fps)")
    return start_frame, end_frame, clip_start, clip_end


def _probe_size(path: Path) -> tuple[int, int]:
    """(height, width) of the first video stream, from the container header (PyAV)."""
    import av

    try:
        with av.open(str(path)) as container:
            context = container.streams.video[0].codec_context
            return int(context.height), int(context.width)
    except (av.FFmpegError, IndexError) as error:
        raise VideoError(f"{path}: cannot read the frame size ({error})") from error


def _decode(path: Path, reader: decord.VideoReader, indices: np.ndarray, settings: VideoFrames) -> np.ndarray:
    """uint8 [T, H, W, 3] frames ``indices`` at the configured size.

    decord 0.6 cannot output a few frame widths, scaled or native (8, 12, 16, 24, 48, 72 pixels:
    "Check failed: from_size == to_size"); for those, decode at the next multiple of 32 (which
    it can) and resize to the wanted width here (antialiased bicubic,
    :func:`vlmlab.data.volume.spatial_resize`).
    """
    import decord

    try:
        return reader.get_batch(indices.tolist()).asnumpy()
    except (RuntimeError, decord.DECORDError) as error:
        if "must exactly match" not in str(error):
            raise
    native_height, native_width = _probe_size(path)
    height, width = settings.height or native_height, settings.width or native_width
    wide = open_video(path, height, 32 * math.ceil(width / 32))
    frames = wide.get_batch(indices.tolist()).asnumpy()
    x = spatial_resize(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), (height, width))
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def read_video(
    path: str | Path,
    settings: VideoFrames,
    start: float | None = None,
    end: float | None = None,
    rng: np.random.Generator | None = None,
) -> DecodedVideo:
    """Decode the frames of ``path`` trimmed to ``[start, end]`` seconds (None: the file's start / end).

    Returns frames uint8 [T, H, W, 3] with timestamps relative to ``start``. ``rng`` is needed for
    "random" sampling only. Raises :class:`VideoError` (naming the path) for a missing or
    undecodable file or a trim outside it.
    """
    import decord

    path = Path(path)
    reader = open_video(path, settings.height, settings.width)
    total, native_fps = len(reader), float(reader.get_avg_fps())
    try:
        start_frame, end_frame, clip_start, clip_end = clip_frames(total, native_fps, start, end)
    except ValueError as error:
        raise VideoError(f"{path}: {error}") from error
    try:
        keyframes = reader.get_key_indices() if settings.sampling == "keyframe" else None
        indices = sample_frame_indices(total, native_fps, settings, start_frame, end_frame, rng, keyframes)
        frames = _decode(path, reader, indices, settings)
    except (RuntimeError, decord.DECORDError) as error:
        raise VideoError(f"{path}: cannot decode video ({_decord_error(error)})") from error
    duration = clip_end - clip_start
    return DecodedVideo(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        # >= 0: the first frame may start a rounding error before clip_start.
        timestamps=np.maximum(indices / native_fps - clip_start, 0.0),
        indices=indices,
        fps=len(indices) / duration,
        duration=duration,
    )
