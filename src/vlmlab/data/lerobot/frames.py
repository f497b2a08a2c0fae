"""The frames of a local LeRobot dataset: per-frame columns, labels and tasks, checked; camera images.

Problems are printed ``PATH:ROW: field: problem``. ROW is ``-`` for a problem with a whole file
(``meta/info.json``, a missing video), else the frame's position ``i`` in
``LeRobotDataset(repo_id, root=PATH)[i]``; for a video frame that does not decode, PATH is the mp4.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from vlmlab.data.checks import Check, decodes, level_of, problems_of
from vlmlab.data.errors import Checked, DataError, DataProblem
from vlmlab.data.lerobot.local import (
    DEFAULT_CAMERAS,
    DEFAULT_REPO_ID,
    FRAME_COLUMNS,
    REWARD_KEY,
    open_local_dataset,
    resolve_num_classes,
    video_file,
)
from vlmlab.data.lerobot.video import VideoDecodeError, decode_video_frame
from vlmlab.data.sample import Sample
from vlmlab.tasks.robot_reward import TASK_PROMPT, RobotRewardTarget, labels_from_reward_bins

__all__ = ["LeRobotFrames", "frame_to_pil", "validate_file"]


def frame_to_pil(value: Any) -> PIL.Image.Image:
    """One camera value as lerobot returns it to an RGB PIL image (the robot reward recipe's conversion).

    value: float tensor/array in [0, 1] (or uint8) ``[T, C, H, W]`` (the first frame is used) or
    ``[C, H, W]``; a PIL image is returned as is.
    """
    if isinstance(value, PIL.Image.Image):
        return value.convert("RGB")
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim == 4:
        array = array[0]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(
            f"expected a [C, H, W] or [T, C, H, W] image with 1 or 3 channels, got {array.shape}"
        )
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    hwc = np.ascontiguousarray(array.transpose(1, 2, 0))
    return PIL.Image.fromarray(hwc[..., 0] if hwc.shape[2] == 1 else hwc).convert("RGB")


class LeRobotFrames:
    """A local LeRobot dataset opened through lerobot, its per-frame columns read once (no pixels).

    Positions are those of ``LeRobotDataset(repo_id, root)[pos]``; :meth:`checked` gives every
    position with its problems, :meth:`sample` decodes one.

    cameras: feature keys in the order their images appear in the prompt.
    num_classes: None: the length of ``reward_bins`` in ``meta/info.json``.
    """

    def __init__(
        self,
        root: str | Path,
        repo_id: str = DEFAULT_REPO_ID,
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        num_classes: int | None = None,
    ):
        self.root = Path(root)
        self.cameras = tuple(cameras)
        self.source = open_local_dataset(self.root, repo_id, self.cameras)
        self.info = self.source.meta.info
        read = self.source.hf_dataset.select_columns([REWARD_KEY, *FRAME_COLUMNS]).with_format("numpy")[:]
        self.columns = {key: np.asarray(read[key]) for key in FRAME_COLUMNS}
        tasks = self.source.meta.tasks
        self.tasks = {int(i): str(name) for name, i in zip(tasks.index, tasks["task_index"], strict=True)}
        reward_bins = np.asarray(read[REWARD_KEY])
        if len(reward_bins) == 0:
            raise DataError.one(self.root, "-", "rows", "the dataset has no frames")
        self.num_classes = resolve_num_classes(num_classes, self.info, self.root)
        self.labels = labels_from_reward_bins(reward_bins)
        self.video_cameras = [c for c in self.cameras if self.info["features"][c]["dtype"] == "video"]
        self.videos = self._video_table()

    def __len__(self) -> int:
        return len(self.labels)

    def _video_table(self) -> dict[tuple[int, str], tuple[Path, float]]:
        """(episode, camera) -> (mp4 path, the episode's start time in it): episodes share mp4 files."""
        if not self.video_cameras:
            return {}
        episodes = self.source.meta.episodes.with_format("numpy")[:]
        return {
            (int(ep), camera): (
                video_file(self.root, self.info, episodes, row, camera),
                float(episodes[f"videos/{camera}/from_timestamp"][row]),
            )
            for row, ep in enumerate(episodes["episode_index"])
            for camera in self.video_cameras
        }

    def episode(self, pos: int) -> int:
        return int(self.columns["episode_index"][pos])

    def frame_index(self, pos: int) -> int:
        return int(self.columns["frame_index"][pos])

    def where(self, pos: int) -> str:
        return f"episode {self.episode(pos)}, frame {self.frame_index(pos)}"

    def problems(self) -> list[DataProblem]:
        """Every frame whose label or task is unusable, in frame order (ROW = position)."""
        root = str(self.root)
        problems = [
            DataProblem(root, int(pos), REWARD_KEY, f"NaN or infinity ({self.where(int(pos))})")
            for pos in np.flatnonzero(self.labels < 0)
        ]
        problems += [
            DataProblem(
                root,
                int(pos),
                REWARD_KEY,
                f"class {self.labels[pos]} >= num_classes {self.num_classes} ({self.where(int(pos))})",
            )
            for pos in np.flatnonzero(self.labels >= self.num_classes)
        ]
        for pos, task_index in enumerate(self.columns["task_index"]):
            task = self.tasks.get(int(task_index))
            if task is None:
                problem = f"task_index {task_index} has no task in meta/tasks.parquet"
                problems.append(DataProblem(root, pos, "task", f"{problem} ({self.where(pos)})"))
            elif not task.strip():
                problems.append(DataProblem(root, pos, "task", f"empty task ({self.where(pos)})"))
        return sorted(problems, key=lambda p: int(p.row))

    def checked(self, check: Check = "headers") -> Checked[int]:
        """The start-of-run check, the validator's and training's (``data.check``): every position with
        its problems. ``headers``: labels and tasks (no pixels decoded); ``full``: also every camera
        of every frame decodes at its declared size (:meth:`decode_problems`)."""
        found: list[list[DataProblem]] = [[] for _ in range(len(self))]
        for problem in self.problems():
            found[int(problem.row)].append(problem)
        if decodes(check):  # every frame (a late frame of an episode can be the bad one) not bad already
            for pos in range(len(self)):
                found[pos] = found[pos] or self.decode_problems(pos)
        return Checked(self.root, list(range(len(self))), found)

    def camera_images(self, pos: int) -> list[PIL.Image.Image]:
        """The configured cameras of the frame at ``pos``, in order (DataError naming the camera)."""
        # Without video keys lerobot's own reader works (images as float [C, H, W] in [0, 1]); with
        # them it would try to decode every video, so take its tabular part (videos are not in it).
        try:
            item = self.source.hf_dataset[pos] if self.source.meta.video_keys else self.source[pos]
        except Exception as error:  # datasets decodes every image of the row: PIL, pyarrow, ... errors
            raise self._unreadable(pos, error) from error
        images = []
        for camera in self.cameras:
            if camera in self.video_cameras:
                images.append(PIL.Image.fromarray(self.video_frame(pos, camera)))
                continue
            try:
                images.append(frame_to_pil(item[camera]))
            except (KeyError, ValueError) as error:
                raise DataError.one(self.root, pos, camera, f"{error} ({self.where(pos)})") from error
        return images

    def _unreadable(self, pos: int, error: Exception) -> DataError:
        """The DataError of a row that lerobot cannot read: it names the first image camera whose
        stored image does not decode (read raw, one camera at a time), else the row."""
        where = self.where(pos)
        row = DataError.one(self.root, pos, "row", f"cannot read: {type(error).__name__}: {error} ({where})")
        try:
            raw = self.source.hf_dataset.with_format("arrow")[pos : pos + 1]  # undecoded
        except Exception:  # the row itself cannot be read
            return row
        for camera in self.cameras:
            if camera in self.video_cameras or camera not in raw.column_names:
                continue
            value = raw.column(camera)[0].as_py()
            stored = value if isinstance(value, dict) else {}
            try:  # as datasets.Image reads it: its bytes, else its path
                PIL.Image.open(io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored["path"]).load()
            except Exception as bad:  # PIL reports broken files with many exception types
                problem = f"does not decode as an image ({type(bad).__name__}: {bad}) ({where})"
                return DataError.one(self.root, pos, camera, problem)
        return row

    def video_frame(self, pos: int, camera: str) -> np.ndarray:
        """uint8 [H, W, 3] of a video camera at the frame's time, located from lerobot's metadata."""
        path, start = self.videos[(self.episode(pos), camera)]
        fps = float(self.info["features"][camera].get("info", {}).get("video.fps", self.info["fps"]))
        time = start + float(self.columns["timestamp"][pos])
        try:
            return decode_video_frame(path, time, fps)
        except VideoDecodeError as error:
            raise DataError.one(path, pos, camera, f"{error} (at {time:.3f} s; {self.where(pos)})") from error

    def decode_problems(self, pos: int) -> list[DataProblem]:
        """Decode every camera of one frame; a problem for each that fails or has the wrong size."""
        problems = []
        try:
            images = self.camera_images(pos)
        except DataError as error:
            return error.problems
        except Exception as error:  # a corrupt parquet row: report it, the caller goes on
            return [DataProblem(str(self.root), pos, "row", f"cannot read: {type(error).__name__}: {error}")]
        for camera, image in zip(self.cameras, images, strict=True):
            shape = tuple(self.info["features"][camera].get("shape", ()))
            expected = shape[:2] if len(shape) == 3 and shape[2] in (1, 3) else shape[1:]
            if (image.height, image.width) != tuple(expected):
                problem = f"decoded {image.height}x{image.width}, info.json says {shape} ({self.where(pos)})"
                problems.append(DataProblem(str(self.root), pos, camera, problem))
        return problems

    def sample(self, pos: int) -> Sample:
        """The frame at ``pos`` as a classification sample (the camera images, then ``Task: ...``)."""
        episode, frame = self.episode(pos), self.frame_index(pos)
        task = self.tasks[int(self.columns["task_index"][pos])]
        label = int(self.labels[pos])
        content: list[dict[str, Any]] = [
            {"type": "image", "image": image} for image in self.camera_images(pos)
        ]
        content.append({"type": "text", "text": TASK_PROMPT.format(task=task)})
        return Sample(
            id=f"episode_{episode:06d}_frame_{frame:06d}",
            messages=[{"role": "user", "content": content}],
            target=RobotRewardTarget(label).as_dict(),
            answer=None,
            label=label,
            metadata={
                "episode_index": episode,
                "frame_index": frame,
                "index": int(self.columns["index"][pos]),
                "task": task,
            },
        )


def validate_file(
    path: str | Path,
    decode: bool = True,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    num_classes: int | None = None,
    repo_id: str = DEFAULT_REPO_ID,
) -> list[DataProblem]:
    """Every problem of a LeRobot dataset folder (``python -m vlmlab.tools.validate lerobot ROOT``).

    Metadata (info.json, cameras, reward_bins, tasks, files), every frame's label and task; with
    ``decode``, every camera of every frame decodes at its declared size (:meth:`LeRobotFrames.checked`).
    """
    check = level_of(decode)
    return problems_of(lambda: [LeRobotFrames(path, repo_id, cameras, num_classes).checked(check)])
