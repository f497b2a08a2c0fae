"""Robot success reward classification from a local LeRobot dataset (seed 002).

A LeRobot v3.0 dataset folder (``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/``,
``data/chunk-*/file-*.parquet``, ``videos/<camera>/chunk-*/file-*.mp4`` for video cameras) is read
through lerobot's own ``LeRobotDataset(repo_id, root=...)``, never from the hub. Each frame becomes
one sample: the configured cameras (seed order: right wrist, left wrist, high) as three images and
the text ``"Task: {task}"``; its class is the argmax of the frame's ``reward_bins`` vector.

Problems are printed ``PATH:ROW: field: problem``. ROW is ``-`` for a problem with a whole file
(``meta/info.json``, a missing video), else the frame's position ``i`` in
``LeRobotDataset(repo_id, root=PATH)[i]``; for a video frame that does not decode, PATH is the mp4.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import PIL.Image
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.datasets.utils import load_episodes
from torch.utils.data import DataLoader, Dataset

from vlmlab.data.base import OnBadSample, Split, VisionLanguageDataModule, keep_good_rows
from vlmlab.data.collate import QwenVLCollator
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sample import Sample
from vlmlab.data.sampler import DurationBatching

log = logging.getLogger(__name__)

# The seed's camera order (AlohaRewardDataset): right wrist, left wrist, then the high camera.
DEFAULT_CAMERAS = (
    "observation.images.cam_right_wrist",
    "observation.images.cam_left_wrist",
    "observation.images.cam_high",
)
REWARD_KEY = "reward_bins"
TASK_PROMPT = "Task: {task}"
DEFAULT_REPO_ID = "vlmlab/synthetic_aloha"
# Columns every LeRobot v3.0 frame carries; read once at construction (cheap: no pixels).
FRAME_COLUMNS = ("episode_index", "frame_index", "index", "timestamp", "task_index")
CODEBASE_MAJOR = 3  # lerobot 0.4.4 reads v3.x datasets only
# lerobot looks up the dataset's versions on the hub (get_safe_version) only when local files are
# missing and only for a revision that parses as a PEP 440 version. This one does not, and
# _LocalLeRobotDataset refuses to download, so reading never reaches the network.
LOCAL_REVISION = "local-files-only"


class VideoDecodeError(ValueError):
    """A video frame that could not be read (missing file, codec error, no frame near the time)."""


def labels_from_reward_bins(reward_bins: np.ndarray) -> np.ndarray:
    """Class of each row as the seed defines it: argmax of the bins, 0 for all-zero bins.

    reward_bins: [N, K] (one vector a row) or [N] (one scalar a row: always class 0).
    Returns int64 [N]; -1 where a row holds a NaN or an infinity (argmax would be meaningless).
    """
    bins = np.asarray(reward_bins, dtype=np.float64)
    if bins.ndim == 1:
        bins = bins[:, None]
    if bins.ndim != 2 or bins.shape[1] == 0:
        raise ValueError(f"reward_bins must be [N] or [N, K>0], got shape {tuple(np.shape(reward_bins))}")
    labels = np.where((bins != 0).any(axis=1), bins.argmax(axis=1), 0).astype(np.int64)
    labels[~np.isfinite(bins).all(axis=1)] = -1
    return labels


def label_from_reward_bins(reward_bins: Any) -> int:
    """The class of one frame: argmax of a 1-D ``reward_bins``; 0 for a scalar or all-zero vector.

    e.g. ``[0, 0, 1, 0] -> 2``, ``[0, 0, 0, 0] -> 0``, ``0.7 -> 0``. Raises ValueError for a
    non-finite value or a rank above 1.
    """
    bins = np.asarray(reward_bins.numpy() if isinstance(reward_bins, torch.Tensor) else reward_bins)
    if bins.ndim > 1:
        raise ValueError(f"reward_bins must be a scalar or a 1-D vector, got shape {bins.shape}")
    label = int(labels_from_reward_bins(bins.reshape(1, -1))[0])
    if label < 0:
        raise ValueError(f"reward_bins holds a NaN or an infinity: {bins.tolist()}")
    return label


def frame_to_pil(value: Any) -> PIL.Image.Image:
    """One camera value as lerobot returns it to an RGB PIL image (the seed's conversion).

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


def decode_video_frame(path: str | Path, timestamp: float, fps: float) -> np.ndarray:
    """The frame of an mp4 nearest to ``timestamp`` (seconds from the file's start): uint8 [H, W, 3].

    Why this exists: lerobot 0.4.4 decodes video cameras with torchcodec (its wheels are CUDA
    builds) or ``torchvision.io.VideoReader`` (gone in torchvision 0.28), so ``LeRobotDataset[i]``
    fails for video cameras on this stack. PyAV, which lerobot itself encodes with, decodes its
    AV1/H.264/HEVC files. Seeks to the keyframe before the time, decodes forward and keeps the
    closest frame; raises VideoDecodeError when none lies within half a frame period.
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


def read_info(root: str | Path) -> dict[str, Any]:
    """``meta/info.json`` of a dataset folder, or a DataError naming the folder or the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError.one(root, "-", "root", "LeRobot dataset folder not found")
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise DataError.one(path, "-", "file", "not found: not a LeRobot dataset folder")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError.one(path, f"line {error.lineno}", "json", error.msg) from error
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DataError.one(path, "-", "features", "expected an object with a 'features' mapping")
    return info


def check_metadata(root: Path, info: dict[str, Any], cameras: Sequence[str]) -> list[DataProblem]:
    """Problems with the dataset's metadata: version, cameras, ``reward_bins``, tasks, episode files.

    Every file lerobot would otherwise fetch from the hub must be here; so is every video file.
    """
    info_path = str(root / "meta" / "info.json")
    problems: list[DataProblem] = []

    def bad(path: str | Path, field: str, problem: str) -> None:
        problems.append(DataProblem(str(path), "-", field, problem))

    version = str(info.get("codebase_version", ""))
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) != CODEBASE_MAJOR:
        bad(
            info_path,
            "codebase_version",
            f"{version!r}: lerobot 0.4.4 reads v3.x datasets (convert older ones)",
        )
    features: dict[str, Any] = info["features"]
    if not cameras:
        bad(info_path, "cameras", "no camera configured")
    for camera in cameras:
        feature = features.get(camera)
        if not isinstance(feature, dict):
            bad(
                info_path, camera, f"camera feature missing (cameras here: {camera_features(info) or 'none'})"
            )
        elif feature.get("dtype") not in ("image", "video"):
            bad(info_path, camera, f"dtype {feature.get('dtype')!r} is not an image or video camera")
    reward = features.get(REWARD_KEY)
    if not isinstance(reward, dict):
        bad(info_path, REWARD_KEY, "feature missing: the reward class of each frame")
    elif len(reward.get("shape", ())) > 1:
        bad(info_path, REWARD_KEY, f"shape {reward.get('shape')} is not a vector or a scalar")
    for key in FRAME_COLUMNS:
        if key not in features:
            bad(info_path, key, "feature missing")
    if not (root / "meta" / "tasks.parquet").is_file():
        bad(root / "meta" / "tasks.parquet", "task", "tasks file not found")
    if not any((root / "data").glob("*/*.parquet")):
        bad(root / "data", "file", "no data/chunk-*/file-*.parquet file")
    if not any((root / "meta" / "episodes").glob("*/*.parquet")):
        bad(root / "meta" / "episodes", "file", "no meta/episodes/chunk-*/file-*.parquet file")
        return problems
    videos = [c for c in cameras if isinstance(features.get(c), dict) and features[c].get("dtype") == "video"]
    if videos and not problems:
        problems += _video_file_problems(root, info, videos)
    return problems


def _video_file_problems(root: Path, info: dict[str, Any], cameras: list[str]) -> list[DataProblem]:
    """A problem for each mp4 of a video camera that meta/episodes points to but is not there."""
    if not info.get("video_path"):
        return [
            DataProblem(str(root / "meta" / "info.json"), "-", "video_path", "missing: video cameras need it")
        ]
    episodes_dir = root / "meta" / "episodes"
    try:
        episodes = load_episodes(root).with_format("numpy")[:]
    except Exception as error:  # pyarrow/datasets raise many types for a corrupt parquet
        return [DataProblem(str(episodes_dir), "-", "file", f"cannot read: {type(error).__name__}: {error}")]
    problems = []
    for camera in cameras:
        if f"videos/{camera}/from_timestamp" not in episodes:
            problems.append(DataProblem(str(episodes_dir), "-", camera, "no video columns for this camera"))
            continue
        paths = {
            video_file(root, info, episodes, row, camera) for row in range(len(episodes["episode_index"]))
        }
        problems += [
            DataProblem(str(p), "-", camera, "video file not found") for p in sorted(paths) if not p.is_file()
        ]
    return problems


def camera_features(info: dict[str, Any]) -> list[str]:
    return [
        k for k, v in info["features"].items() if isinstance(v, dict) and v.get("dtype") in ("image", "video")
    ]


def video_file(
    root: Path, info: dict[str, Any], episodes: dict[str, np.ndarray], row: int, camera: str
) -> Path:
    """The mp4 holding ``camera`` for row ``row`` of ``meta/episodes`` (info's ``video_path`` template)."""
    return root / info["video_path"].format(
        video_key=camera,
        chunk_index=int(episodes[f"videos/{camera}/chunk_index"][row]),
        file_index=int(episodes[f"videos/{camera}/file_index"][row]),
    )


class _LocalLeRobotDataset(LeRobotDataset):
    """LeRobotDataset that never downloads: lerobot pulls missing files from the hub, we report them."""

    def pull_from_repo(self, allow_patterns: Any = None, ignore_patterns: Any = None) -> None:
        raise FileNotFoundError(
            f"{self.root}: local files are missing or incomplete ({allow_patterns or 'data'}); "
            "vlmlab reads local LeRobot datasets only"
        )


def open_local_dataset(root: str | Path, repo_id: str, cameras: Sequence[str]) -> LeRobotDataset:
    """A local LeRobot dataset through lerobot's own reader, after checking its metadata (DataError)."""
    root = Path(root)
    info = read_info(root)  # before LeRobotDataset: it would create a missing root folder
    problems = check_metadata(root, info, cameras)
    if problems:
        raise DataError(problems)
    try:
        # video_backend: lerobot's decoders do not work here (see decode_video_frame); naming one
        # avoids its torchcodec probe. Frames of video cameras are decoded by decode_video_frame.
        return _LocalLeRobotDataset(repo_id, root=root, revision=LOCAL_REVISION, video_backend="pyav")
    except Exception as error:  # lerobot raises many types for a broken folder; name the folder
        raise DataError.one(
            root, "-", "dataset", f"lerobot cannot open it: {type(error).__name__}: {error}"
        ) from error


class LeRobotFrames:
    """A local LeRobot dataset opened through lerobot, its per-frame columns read once (no pixels).

    Shared by :class:`LeRobotRewardDataset` (every split) and :func:`validate_file`. Positions are
    those of ``LeRobotDataset(repo_id, root)[pos]``.
    """

    def __init__(self, root: str | Path, repo_id: str, cameras: Sequence[str], num_classes: int | None):
        self.root = Path(root)
        self.cameras = tuple(cameras)
        self.source = open_local_dataset(self.root, repo_id, self.cameras)
        self.info = self.source.meta.info
        read = self.source.hf_dataset.select_columns([REWARD_KEY, *FRAME_COLUMNS]).with_format("numpy")[:]
        self.columns = {key: np.asarray(read[key]) for key in FRAME_COLUMNS}
        tasks = self.source.meta.tasks
        self.tasks = {int(i): str(name) for name, i in zip(tasks.index, tasks["task_index"], strict=True)}
        reward_bins = np.asarray(read[REWARD_KEY])
        self.num_classes = resolve_num_classes(reward_bins, num_classes, self.root)
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

    def where(self, pos: int) -> str:
        return f"episode {self.episode(pos)}, frame {int(self.columns['frame_index'][pos])}"

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

    def camera_images(self, pos: int) -> list[PIL.Image.Image]:
        """The configured cameras of the frame at ``pos``, in order (DataError naming the camera)."""
        # Without video keys lerobot's own reader works (images as float [C, H, W] in [0, 1]); with
        # them it would try to decode every video, so take its tabular part (videos are not in it).
        item = self.source.hf_dataset[pos] if self.source.meta.video_keys else self.source[pos]
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
        """The frame at ``pos`` as a classification sample (three images, then ``Task: ...``)."""
        episode, frame = self.episode(pos), int(self.columns["frame_index"][pos])
        task = self.tasks[int(self.columns["task_index"][pos])]
        label = int(self.labels[pos])
        content: list[dict[str, Any]] = [
            {"type": "image", "image": image} for image in self.camera_images(pos)
        ]
        content.append({"type": "text", "text": TASK_PROMPT.format(task=task)})
        return Sample(
            id=f"episode_{episode:06d}_frame_{frame:06d}",
            messages=[{"role": "user", "content": content}],
            target={"label": label},
            answer=None,
            label=label,
            metadata={
                "episode_index": episode,
                "frame_index": frame,
                "index": int(self.columns["index"][pos]),
                "task": task,
            },
        )


class LeRobotRewardDataset(Dataset):
    """Frames of a local LeRobot dataset as classification samples (three images + task, class).

    Checked at construction without decoding pixels: metadata, every video file, every frame's
    ``reward_bins`` (finite, class < num_classes) and task; ``on_bad_sample`` raises or skips.
    Pixels are decoded lazily.

    root: the dataset folder. repo_id: lerobot's name for it (never looked up on the hub).
    cameras: feature keys in the order their images appear in the prompt.
    num_classes: None infers it from the length of the first frame's ``reward_bins``.
    """

    def __init__(
        self,
        root: str | Path,
        repo_id: str = DEFAULT_REPO_ID,
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        num_classes: int | None = None,
        on_bad_sample: OnBadSample = "raise",
    ):
        self.frames = LeRobotFrames(root, repo_id, cameras, num_classes)
        self.root = self.frames.root
        self.num_classes = self.frames.num_classes
        every = list(range(len(self.frames)))
        self.positions: list[int] = keep_good_rows(every, self.frames.problems(), on_bad_sample, self.root)
        self.skipped = len(every) - len(self.positions)

    @property
    def episode_indices(self) -> list[int]:
        """Episodes with at least one usable frame, ascending."""
        return sorted({self.frames.episode(pos) for pos in self.positions})

    def select_episodes(self, episodes: Sequence[int]) -> LeRobotRewardDataset:
        """The frames of these episodes only; shares the opened dataset (nothing is read again)."""
        wanted = {int(e) for e in episodes}
        subset = copy.copy(self)
        subset.positions = [pos for pos in self.positions if self.frames.episode(pos) in wanted]
        return subset

    def in_frame_order(self) -> LeRobotRewardDataset:
        """The same frames sorted by (episode, frame index): how predictions are read along an episode."""
        ordered = copy.copy(self)
        ordered.positions = sorted(
            self.positions,
            key=lambda pos: (self.frames.episode(pos), int(self.frames.columns["frame_index"][pos])),
        )
        return ordered

    def sample_costs(self) -> list[float]:
        """Batching cost of each frame: the number of camera images it shows (all the same)."""
        return [float(len(self.frames.cameras))] * len(self)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Sample:
        return self.frames.sample(self.positions[i])


def resolve_num_classes(reward_bins: np.ndarray, num_classes: int | None, root: Path) -> int:
    """Configured ``num_classes``, or the length of the first frame's ``reward_bins`` vector."""
    if num_classes is not None:
        if int(num_classes) < 1:
            raise ValueError(f"data.num_classes={num_classes}; expected >= 1 or null (infer)")
        return int(num_classes)
    if len(reward_bins) == 0:
        raise DataError.one(root, "-", "rows", "the dataset has no frames")
    if reward_bins.ndim < 2:
        raise DataError.one(
            root, 0, REWARD_KEY, "a scalar: cannot infer the number of classes; set data.num_classes"
        )
    return int(reward_bins.shape[1])


def split_episodes(
    episodes: Sequence[int],
    val_episodes: Sequence[int] | float | None,
    test_episodes: Sequence[int] | float | None,
    seed: int = 0,
) -> dict[Split, list[int]]:
    """Episode-disjoint splits: frames of one episode never appear in two splits.

    Each of val/test is a list of episode indices, or a fraction in [0, 1) of the episodes drawn
    by a seeded shuffle (``round(f * E)``, at least 1 when f > 0), or None/0 for no split.
    Train is every other episode and must keep at least one.
    """
    all_eps = sorted(int(e) for e in episodes)
    order = [all_eps[i] for i in np.random.default_rng(seed).permutation(len(all_eps))]
    chosen: dict[Split, list[int]] = {}
    for split, spec in (("test", test_episodes), ("val", val_episodes)):
        if spec is None or (isinstance(spec, int | float) and not isinstance(spec, bool) and spec == 0):
            chosen[split] = []
        elif isinstance(spec, float):
            if not 0.0 < spec < 1.0:
                raise ValueError(f"data.{split}_episodes={spec}: a fraction must be in [0, 1)")
            taken = {e for eps in chosen.values() for e in eps}
            free = [e for e in order if e not in taken]
            count = min(len(free), max(1, round(spec * len(all_eps))))
            chosen[split] = sorted(free[:count])
        elif isinstance(spec, Sequence) and not isinstance(spec, str):
            listed = [int(e) for e in spec]
            unknown = sorted(set(listed) - set(all_eps))
            if unknown:
                raise ValueError(
                    f"data.{split}_episodes: episodes {unknown} are not in the dataset ({len(all_eps)} episodes)"
                )
            chosen[split] = sorted(set(listed))
        else:
            raise ValueError(
                f"data.{split}_episodes={spec!r}: give a fraction (0.2), a list of episode indices ([3, 7]) or null"
            )
    overlap = sorted(set(chosen["val"]) & set(chosen["test"]))
    if overlap:
        raise ValueError(f"episodes {overlap} are in both data.val_episodes and data.test_episodes")
    held_out = set(chosen["val"]) | set(chosen["test"])
    train = [e for e in all_eps if e not in held_out]
    if not train:
        raise ValueError(f"no episode left for training: val {chosen['val']}, test {chosen['test']}")
    return {"train": train, "val": chosen["val"], "test": chosen["test"]}


def validate_file(
    path: str | Path,
    decode: bool = True,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    num_classes: int | None = None,
    repo_id: str = DEFAULT_REPO_ID,
) -> list[DataProblem]:
    """Every problem of a LeRobot dataset folder (``python -m vlmlab.tools.validate lerobot ROOT``).

    Metadata (info.json, cameras, reward_bins, tasks, files), every frame's label and task; with
    ``decode``, each camera of the first frame of every episode decodes at its declared size.
    """
    try:
        frames = LeRobotFrames(path, repo_id, cameras, num_classes)
    except DataError as error:
        return error.problems
    problems = frames.problems()
    if decode:
        first: dict[int, int] = {}
        for pos in range(len(frames)):
            first.setdefault(frames.episode(pos), pos)
        for pos in first.values():
            problems += frames.decode_problems(pos)
    return problems


class LeRobotRewardDataModule(VisionLanguageDataModule):
    """Reward classification on a local LeRobot dataset, split by episode.

    The dataset is one folder, not split files: ``setup`` opens it once, checks every frame and
    gives each split the frames of its episodes. ``num_classes`` is set after ``setup`` (inferred
    from ``reward_bins`` when not configured). ``prepare_data`` writes the synthetic dataset when
    ``synthesize`` is on and ``root`` has no ``meta/info.json``.

    duration_batching: as :class:`VisionLanguageDataModule` (every frame costs its camera count).
    predict_episodes: episodes (of any split) whose every usable frame ``predict_dataloader`` yields
    in frame order, for per-episode reward curves; None: the test episodes.
    """

    def __init__(
        self,
        root: str,
        repo_id: str = DEFAULT_REPO_ID,
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        num_classes: int | None = None,
        val_episodes: Sequence[int] | float | None = 0.15,
        test_episodes: Sequence[int] | float | None = 0.15,
        split_seed: int = 0,
        collator: QwenVLCollator | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        synthesize: bool = False,
        synth_episodes: int = 12,
        synth_video: bool = False,
        on_bad_sample: OnBadSample = "raise",
        predict_episodes: Sequence[int] | None = None,
        duration_batching: DurationBatching | Mapping[str, Any] | None = None,
        seed: int | None = None,
    ):
        super().__init__(
            root=root,
            collator=collator,
            train_file=None,
            val_file=None,
            test_file=None,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            synthesize=synthesize,
            on_bad_sample=on_bad_sample,
            duration_batching=duration_batching,
            seed=seed,
        )
        self.repo_id = repo_id
        self.cameras = tuple(cameras)
        self.configured_num_classes = num_classes
        self.num_classes: int | None = num_classes
        # Hydra gives ListConfig; keep plain lists (and floats) so the split rule sees Python types.
        self.val_episodes = _plain(val_episodes)
        self.test_episodes = _plain(test_episodes)
        self.split_seed = split_seed
        self.synth_episodes = synth_episodes
        self.synth_video = synth_video
        self.split_episodes: dict[Split, list[int]] = {}
        self.predict_episodes = None if predict_episodes is None else [int(e) for e in predict_episodes]
        self.predict_dataset: LeRobotRewardDataset | None = None

    def build_dataset(self, path: Path) -> LeRobotRewardDataset:
        """Every episode of the dataset folder ``path``."""
        return LeRobotRewardDataset(
            path, self.repo_id, self.cameras, self.configured_num_classes, self.on_bad_sample
        )

    def write_synthetic(self, root: Path) -> None:
        from vlmlab.data.synthetic.lerobot import write

        write(root, num_episodes=self.synth_episodes, video=self.synth_video)

    def has_data(self) -> bool:
        return (self.root / "meta" / "info.json").is_file()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        full = self.build_dataset(self.root)
        if len(full) == 0:
            raise DataError.one(self.root, "-", "rows", "the dataset is empty")
        self.num_classes = full.num_classes
        self.split_episodes = split_episodes(
            full.episode_indices, self.val_episodes, self.test_episodes, self.split_seed
        )
        for split, episodes in self.split_episodes.items():
            if episodes:
                self.datasets[split] = full.select_episodes(episodes)
        predict = self.split_episodes["test"] if self.predict_episodes is None else self.predict_episodes
        unknown = sorted(set(predict) - set(full.episode_indices))
        if unknown:
            raise ValueError(
                f"data.predict_episodes: episodes {unknown} have no usable frame in {self.root} "
                f"(episodes {full.episode_indices[0]}..{full.episode_indices[-1]})"
            )
        if predict:
            self.predict_dataset = full.select_episodes(predict).in_frame_order()
        log.info(
            "%s: %d classes; episodes train %d, val %d, test %d",
            self.root,
            self.num_classes,
            *(len(self.split_episodes[s]) for s in ("train", "val", "test")),
        )

    def missing_split_hint(self, split: Split) -> str:
        return f"set data.{split}_episodes (a fraction or a list of episodes)"

    def predict_dataloader(self) -> DataLoader:
        """Every usable frame of ``predict_episodes`` (default: the test episodes), episode by episode
        in frame order, never shuffled."""
        if self.predict_dataset is None:
            raise RuntimeError("no episodes to predict: set data.predict_episodes (or data.test_episodes)")
        return DataLoader(
            self.predict_dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=self._collator().eval,
            persistent_workers=self.num_workers > 0,
        )


def _plain(spec: Any) -> Sequence[int] | float | None:
    if spec is None or isinstance(spec, int | float):
        return spec
    return [int(e) for e in spec]


__all__ = [
    "DEFAULT_CAMERAS",
    "LeRobotFrames",
    "LeRobotRewardDataModule",
    "LeRobotRewardDataset",
    "VideoDecodeError",
    "decode_video_frame",
    "frame_to_pil",
    "label_from_reward_bins",
    "labels_from_reward_bins",
    "split_episodes",
    "validate_file",
]
