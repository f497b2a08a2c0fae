"""Decoding one frame of a LeRobot video camera with PyAV.

lerobot 0.4.4 decodes video cameras with torchcodec (its wheels are CUDA builds) or
``torchvision.io.VideoReader`` (gone in torchvision 0.28), so ``LeRobotDataset[i]`` fails for video
cameras on this stack. PyAV, which lerobot itself encodes with, decodes its AV1/H.264/HEVC files.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

__all__ = ["VideoDecodeError", "decode_video_frame"]


class VideoDecodeError(ValueError):
    """A video frame that could not be read (missing file, codec error, no frame near the time)."""


def decode_video_frame(path: str | Path, timestamp: float, fps: float) -> np.ndarray:
    """The frame of an mp4 nearest to ``timestamp`` (seconds from the file's start): uint8 [H, W, 3].

    Seeks to the keyframe before the time, decodes forward and keeps the closest frame; raises
    VideoDecodeError when none lies within half a frame period (``0.5 / fps``).
    """
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError("video file not found")
    tolerance = 0.5 / fps + 1e-4
    best: tuple[float, np.ndarray] | None = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream")
            stream = container.streams.video[0]
            # Seek in the stream's time base; backward=True lands on the keyframe at or before it.
            container.seek(max(0, int(timestamp / stream.time_base)), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                gap = abs(frame.time - timestamp)
                if best is None or gap < best[0]:
                    best = (gap, frame.to_ndarray(format="rgb24"))
                if frame.time > timestamp + tolerance:
                    break
    except av.FFmpegError as error:
        raise VideoDecodeError(f"cannot decode: {error}") from error
    if best is None or best[0] > tolerance:
        found = "no frame" if best is None else f"nearest frame {best[0]:.3f} s away"
        raise VideoDecodeError(f"no frame at {timestamp:.3f} s ({found})")
    return best[1]
