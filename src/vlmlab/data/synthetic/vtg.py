"""Synthetic temporal grounding data: short mp4 clips where a coloured square appears only
during a known window, and sentences that name its colour.

``python -m vlmlab.tools.synth vtg OUT_DIR`` calls :func:`write`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["BACKGROUND", "COLOURS", "SENTENCES", "write", "write_video"]

# Saturated, well separated colours: they survive yuv420p chroma subsampling and H.264.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 60, 230),
    "yellow": (230, 220, 40),
    "magenta": (210, 40, 210),
    "cyan": (40, 210, 210),
}
BACKGROUND = (40, 40, 40)
SENTENCES = ("the {} square appears", "a {} square is shown", "the {} square is visible")
_MIN_SECONDS, _MAX_SECONDS = 4, 10  # clip length (the annotated, trimmed part)


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 [T, H, W, 3] frames as H.264 / yuv420p mp4 with a keyframe every 2 s.

    One encoder thread and no timestamps in the container keep the bytes identical for the same frames.
    """
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # crf 18: near-lossless colours; g: keyframe interval (keyframe sampling has keyframes to use).
        stream.options = {"crf": "18", "g": str(2 * fps), "threads": "1"}
        stream.thread_count = 1
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _square(rng: np.random.Generator, size: int) -> tuple[int, int, int]:
    """(top, left, side) of a square of a third to a half of the frame, fully inside it."""
    side = int(rng.integers(size // 3, size // 2 + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    return top, left, side


def _draw(frames: np.ndarray, first: int, last: int, square: tuple[int, int, int], colour: str) -> None:
    top, left, side = square
    frames[first:last, top : top + side, left : left + side] = COLOURS[colour]


def write(
    out_dir: Path,
    num_train: int = 32,
    num_val: int = 8,
    num_test: int = 8,
    size: int = 64,
    fps: int = 4,
    distractor: bool = False,
    max_window: float = 0.5,
    window_step: int = 1,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a synthetic temporal grounding set in the recipe's JSONL format; return the split files.

    Layout: ``out_dir/videos/vtg_NNN.mp4`` (H.264, yuv420p, ``size`` x ``size``, ``fps``) and
    ``out_dir/{train,val,test}.jsonl`` with video paths relative to ``out_dir`` (the default
    ``video_dir``). Each annotated clip lasts 4-10 s on a dark grey background; a square of one
    colour (:data:`COLOURS`) is visible exactly during frames ``[a, b)``, i.e. the window
    ``timestamp = [a / fps, b / fps]`` seconds (1 s to ``max_window`` of the clip), and the sentence names the
    colour (:data:`SENTENCES`). ``window_step``: the clip length and the window's edges are multiples of
    this many frames (2 aligns them with Qwen's two-frame temporal patches). With ``distractor``, a square of another colour is shown during a
    disjoint window.

    Row variety (by case index ``i``): ``i % 3 == 1`` files have 1-2 s of extra video before and
    after the clip, annotated by ``video_start`` / ``video_end`` (absolute seconds in the file),
    with ``duration = video_end - video_start`` and ``timestamp`` relative to the trimmed clip; the
    extra lead-in shows the same square (a decoy that only a reader ignoring the trim would see).
    ``qid`` on every row but ``i % 5 == 3``; ``difficulty`` on even rows; ``pred`` on
    ``i % 3 == 0``; unknown keys ``source`` and ``colour`` on ``i % 4 == 0``. Deterministic for a seed.
    """
    if size < 32 or size % 2:
        raise ValueError(f"size must be even and >= 32 (H.264 yuv420p), got {size}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if window_step < 1:
        raise ValueError(f"window_step must be >= 1, got {window_step}")
    if not 0 < max_window <= 1:
        raise ValueError(f"max_window must be in (0, 1], got {max_window}")
    if min(num_train, num_val, num_test) < 0:
        raise ValueError("split sizes must be >= 0")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    total = num_train + num_val + num_test
    width = max(3, len(str(max(total - 1, 0))))
    paths: dict[str, Path] = {}
    index = 0
    for split, count in {"train": num_train, "val": num_val, "test": num_test}.items():
        lines = []
        for _ in range(count):
            case = f"vtg_{index:0{width}d}"
            step = window_step  # every draw below is a multiple of it (step 1: any frame)
            n = step * int(
                rng.integers(-(-_MIN_SECONDS * fps // step), _MAX_SECONDS * fps // step + 1)
            )  # clip frames
            shortest = -(-fps // step)  # at least 1 s
            length = step * int(rng.integers(shortest, max(shortest, int(n * max_window) // step) + 1))
            a = step * int(rng.integers(0, (n - length) // step + 1))
            b = a + length
            colour = names[int(rng.integers(len(names)))]
            sentence = SENTENCES[int(rng.integers(len(SENTENCES)))].format(colour)
            trimmed = index % 3 == 1
            lead, tail = (int(rng.integers(fps, 2 * fps + 1)) for _ in range(2)) if trimmed else (0, 0)
            frames = np.empty((lead + n + tail, size, size, 3), dtype=np.uint8)
            frames[:] = BACKGROUND
            square = _square(rng, size)
            _draw(frames, lead + a, lead + b, square, colour)
            if trimmed:
                _draw(frames, 0, lead // 2, square, colour)  # decoy outside the trimmed clip
            if distractor:
                other = names[(names.index(colour) + int(rng.integers(1, len(names)))) % len(names)]
                # The longer free side of the clip, so the two windows never overlap.
                first, last = (0, a) if a >= n - b else (b, n)
                if last - first >= 2:
                    d0 = int(rng.integers(first, last - 1))
                    d1 = int(rng.integers(d0 + 1, last + 1))
                    _draw(frames, lead + d0, lead + d1, _square(rng, size), other)
            rel = f"videos/{case}.mp4"
            write_video(out_dir / rel, frames, fps)
            record: dict = {
                "video": rel,
                "duration": n / fps,
                "timestamp": [a / fps, b / fps],
                "sentence": sentence,
            }
            if index % 5 != 3:
                record["qid"] = f"synthetic|vtg|{case}|{sentence}"
            if trimmed:
                record["video_start"] = lead / fps
                record["video_end"] = (lead + n) / fps
            if index % 2 == 0:
                record["difficulty"] = round(float(rng.uniform(0, 100)), 3)
            if index % 3 == 0:
                jitter = rng.uniform(-0.5, 0.5, size=2)
                lo = float(np.clip(a / fps + jitter[0], 0, n / fps))
                hi = float(np.clip(b / fps + jitter[1], lo, n / fps))
                record["pred"] = [round(lo, 2), round(hi, 2)]
            if index % 4 == 0:
                record["source"] = "synthetic"
                record["colour"] = colour
            lines.append(json.dumps(record))
            index += 1
        paths[split] = out_dir / f"{split}.jsonl"
        paths[split].write_text("".join(line + "\n" for line in lines))
    return paths
