"""Synthetic robot reward data: a LeRobot dataset whose reward class is drawn in cam_high.

``python -m vlmlab.tools.synth lerobot OUT_DIR`` calls :func:`write`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["CAMERAS", "REPO_ID", "SYNTH_FPS", "TASKS", "draw_progress_bar", "episode_labels", "write"]

REPO_ID = "vlmlab/synthetic_aloha"
SYNTH_FPS = 10
CAMERAS = (
    "observation.images.cam_high",
    "observation.images.cam_left_wrist",
    "observation.images.cam_right_wrist",
)
TASKS = ("fold the towel", "fold the towel in half", "fold the towel twice")
STATE_DIM = 14  # Aloha: two 6-DoF arms and two grippers
_BACKGROUND, _BAR_EMPTY, _BAR_FULL = 30, 80, 235
_NOISE = 4.0
# One towel colour per task, so the wrist cameras differ by task (they carry no reward).
_TOWEL_COLOURS = ((200, 60, 60), (60, 160, 220), (90, 190, 90))


def episode_labels(episode: int, frames: int, num_classes: int, rng: np.random.Generator) -> list[int]:
    """The reward class of each frame: progress climbing from 0 to the episode's final class.

    Even episodes succeed (final class ``num_classes - 1``); odd ones stall at a random lower class.
    """
    final = num_classes - 1 if episode % 2 == 0 else int(rng.integers(0, num_classes - 1))
    if frames == 1:
        return [final]
    return [round(final * t / (frames - 1)) for t in range(frames)]


def draw_progress_bar(label: int, num_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """cam_high: uint8 [size, size, 3], a horizontal bar whose filled fraction is ``(label + 1) / num_classes``.

    The bar spans columns ``[size // 8, size - size // 8)`` and rows ``[3 * size // 8, 5 * size // 8)``;
    filled cells are near 235, the empty rest of the bar near 80, the background near 30.
    """
    image = np.full((size, size, 3), _BACKGROUND, dtype=np.float32)
    left, right = size // 8, size - size // 8
    top, bottom = 3 * size // 8, 5 * size // 8
    filled = left + round((right - left) * (label + 1) / num_classes)
    image[top:bottom, left:right] = _BAR_EMPTY
    image[top:bottom, left:filled] = _BAR_FULL
    image += rng.normal(0.0, _NOISE, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _draw_wrist(task: int, size: int, side: str, rng: np.random.Generator) -> np.ndarray:
    """A wrist camera: a towel-coloured square (colour by task) on its side of a noisy table."""
    image = np.full((size, size, 3), 110, dtype=np.float32)
    half = size // 2
    side_size = size // 3
    x0 = int(rng.integers(0, half - side_size + 1)) + (0 if side == "left" else half)
    y0 = int(rng.integers(0, size - side_size + 1))
    image[y0 : y0 + side_size, x0 : x0 + side_size] = _TOWEL_COLOURS[task % len(_TOWEL_COLOURS)]
    image += rng.normal(0.0, _NOISE, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def write(
    out_dir: Path,
    num_episodes: int = 12,
    frames_per_episode: int = 8,
    num_classes: int = 4,
    size: int = 48,
    video: bool = False,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a synthetic Aloha-like LeRobot v3.0 dataset with lerobot's own writer; return ``{"root": out_dir}``.

    ``LeRobotDataset.create(repo_id="vlmlab/synthetic_aloha", root=out_dir, fps=10)`` with three
    cameras (``cam_high``, ``cam_left_wrist``, ``cam_right_wrist``; ``image`` features stored in
    the parquet, or with ``video`` ``video`` features encoded to AV1 mp4 by lerobot),
    ``observation.state`` / ``action`` (14 floats), and ``reward_bins`` float32 ``[num_classes]``:
    the one-hot reward class of the frame (all zeros for class 0 in odd episodes, which the reader
    also maps to class 0). The class is visible in cam_high as a progress bar filled to
    ``(class + 1) / num_classes`` (:func:`draw_progress_bar`); tasks are variants of "fold the
    towel". ``out_dir`` must not exist or be empty (lerobot creates it). Deterministic for a seed.
    """
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if num_episodes < 1 or frames_per_episode < 1:
        raise ValueError(
            f"need num_episodes >= 1 and frames_per_episode >= 1, got {num_episodes}, {frames_per_episode}"
        )
    if num_classes < 2:
        raise ValueError(f"need num_classes >= 2, got {num_classes}")
    if size < 16:
        raise ValueError(f"need size >= 16 for a readable progress bar, got {size}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir}: not empty; lerobot writes a new dataset folder")
        out_dir.rmdir()  # lerobot refuses an existing folder, even an empty one
    camera = {
        "dtype": "video" if video else "image",
        "shape": (size, size, 3),
        "names": ["height", "width", "channels"],
    }
    vector = {"dtype": "float32", "shape": (STATE_DIM,), "names": None}
    features = {
        **{key: dict(camera) for key in CAMERAS},
        "observation.state": dict(vector),
        "action": dict(vector),
        "reward_bins": {"dtype": "float32", "shape": (num_classes,), "names": None},
    }
    dataset = LeRobotDataset.create(
        repo_id=REPO_ID,
        fps=SYNTH_FPS,
        features=features,
        root=out_dir,
        robot_type="aloha",
        use_videos=video,
        video_backend="pyav",  # never used to read; skips its torchcodec probe and warning
    )
    rng = np.random.default_rng(seed)
    for episode in range(num_episodes):
        task = int(rng.integers(0, len(TASKS)))
        labels = episode_labels(episode, frames_per_episode, num_classes, rng)
        for label in labels:
            bins = np.zeros(num_classes, dtype=np.float32)
            if label > 0 or episode % 2 == 0:
                bins[label] = 1.0
            state = rng.normal(0.0, 0.1, size=STATE_DIM).astype(np.float32)
            dataset.add_frame(
                {
                    "observation.images.cam_high": draw_progress_bar(label, num_classes, size, rng),
                    "observation.images.cam_left_wrist": _draw_wrist(task, size, "left", rng),
                    "observation.images.cam_right_wrist": _draw_wrist(task, size, "right", rng),
                    "observation.state": state,
                    "action": state + np.float32(0.01),
                    "reward_bins": bins,
                    "task": TASKS[task],
                }
            )
        # One process: the frames are tiny, and forking a process pool per episode costs more.
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    return {"root": out_dir}
