"""A checked grounding row and its clip to the sample contract.

The prompt (:func:`~vlmlab.tasks.grounding.grounding_prompt`) gives the clip's length and the sentence;
the answer (:func:`~vlmlab.tasks.grounding.format_span`) and ``Sample.target``
(:class:`~vlmlab.tasks.grounding.GroundingTarget`: ``timestamp [s, e]`` seconds clamped to the clip,
``duration``, and how the answer is written) are in the time frame of the trimmed clip.

Every row field except ``duration`` / ``timestamp`` (which go to ``target``) is copied to
``Sample.metadata`` under its own name (``video``, ``sentence``, ``qid``, ``video_start``,
``difficulty``, ``pred``, unknown keys), plus ``annotation_file`` and ``annotation_line``.
``Sample.id`` is the row's id (:func:`~vlmlab.data.vtg.rows.sample_ids`).
"""

from __future__ import annotations

import numpy as np
import torch

from vlmlab.data.errors import DataError
from vlmlab.data.sample import Sample
from vlmlab.data.video import VideoError, VideoFrames, read_video
from vlmlab.data.vtg.rows import VTGRow
from vlmlab.tasks.grounding import GroundingTarget, TemporalFormat, format_span, grounding_prompt

__all__ = ["to_sample"]


def to_sample(item: VTGRow, frames: VideoFrames, temporal: TemporalFormat) -> Sample:
    """Decode the row's clip (uint8 [T, H, W, 3], trimmed to ``video_start`` / ``video_end``) and
    build its sample; a DataError naming the file, line and ``video`` if the clip cannot be decoded.

    ``frames.sampling == "random"`` draws its frames from torch's RNG, so ``seed_everything``
    (which seeds every dataloader worker) makes it reproducible.
    """
    row = item.row
    rng = None
    if frames.sampling == "random":
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    try:
        video = read_video(item.video_path(), frames, row.get("video_start"), row.get("video_end"), rng)
    except VideoError as error:
        raise DataError.one(item.path, item.line, "video", str(error)) from error
    duration = float(row["duration"])
    # Within tolerance of the clip (checked): clamp the float noise away.
    start = min(max(float(row["timestamp"][0]), 0.0), duration)
    end = min(max(float(row["timestamp"][1]), start), duration)
    metadata = {k: v for k, v in row.items() if k not in ("duration", "timestamp")}
    metadata.update(annotation_file=str(item.path), annotation_line=item.line)
    return Sample(
        id=item.id,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": video.frames, "fps": video.fps},
                    {"type": "text", "text": grounding_prompt(row["sentence"], duration, temporal)},
                ],
            }
        ],
        target=GroundingTarget.of(start, end, duration, temporal).as_dict(),
        answer=format_span(start, end, duration, temporal),
        metadata=metadata,
    )
