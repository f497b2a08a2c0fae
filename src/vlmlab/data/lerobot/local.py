"""Opening a local LeRobot v3.0 dataset folder: its metadata, checked, and lerobot's reader on it.

A folder holds ``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/``,
``data/chunk-*/file-*.parquet`` and, for video cameras, ``videos/<camera>/chunk-*/file-*.mp4``.
Everything is checked here before lerobot sees the folder: lerobot would create a missing root and
fetch missing files from the hub; vlmlab reports them instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.files import read_json

if TYPE_CHECKING:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

__all__ = [
    "DEFAULT_CAMERAS",
    "DEFAULT_REPO_ID",
    "FRAME_COLUMNS",
    "REWARD_KEY",
    "camera_features",
    "check_metadata",
    "frame_table_problems",
    "open_local_dataset",
    "read_info",
    "resolve_num_classes",
    "reward_classes",
    "video_file",
]

# The robot reward recipe's camera order: right wrist, left wrist, then the high camera.
DEFAULT_CAMERAS = (
    "observation.images.cam_right_wrist",
    "observation.images.cam_left_wrist",
    "observation.images.cam_high",
)
REWARD_KEY = "reward_bins"
DEFAULT_REPO_ID = "vlmlab/synthetic_aloha"
# Columns every LeRobot v3.0 frame carries; read once when a dataset is opened (cheap: no pixels).
FRAME_COLUMNS = ("episode_index", "frame_index", "index", "timestamp", "task_index")
CODEBASE_MAJOR = 3  # lerobot 0.4.4 reads v3.x datasets only
# lerobot looks up the dataset's versions on the hub (get_safe_version) only when local files are
# missing and only for a revision that parses as a PEP 440 version. This one does not, and
# LocalLeRobotDataset refuses to download, so reading never reaches the network.
LOCAL_REVISION = "local-files-only"


def info_path(root: Path) -> Path:
    return root / "meta" / "info.json"


def read_info(root: str | Path) -> dict[str, Any]:
    """``meta/info.json`` of a dataset folder, or a DataError naming the folder or the file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError.one(root, "-", "root", "LeRobot dataset folder not found")
    path = info_path(root)
    if not path.is_file():
        raise DataError.one(path, "-", "file", "not found: not a LeRobot dataset folder")
    info = read_json(path, what="an object with a 'features' mapping")
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DataError.one(path, "-", "features", "expected an object with a 'features' mapping")
    return info


def reward_classes(info: dict[str, Any], root: Path) -> int:
    """The number of classes ``info.json`` declares: the length of the ``reward_bins`` vector.

    A DataError naming info.json and ``reward_bins`` when the feature is missing or a scalar (lerobot
    stores a shape ``[1]`` feature as one number a frame), or its shape is not a vector.
    """
    feature = info["features"].get(REWARD_KEY)
    shape = feature.get("shape") if isinstance(feature, dict) else None

    def cannot(why: str) -> DataError:
        return DataError.one(
            info_path(root),
            "-",
            REWARD_KEY,
            f"{why}: cannot infer the number of classes; set data.num_classes",
        )

    if shape is None:
        raise cannot("feature or its shape missing")
    if not isinstance(shape, list | tuple) or not all(isinstance(n, int) for n in shape) or len(shape) > 1:
        raise cannot(f"shape {shape!r} is not a vector")
    if len(shape) == 0 or shape[0] == 1:
        raise cannot(f"a scalar (shape {list(shape)})")
    if shape[0] < 1:
        raise cannot(f"shape {list(shape)} has no bins")
    return int(shape[0])


def resolve_num_classes(num_classes: int | None, info: dict[str, Any], root: Path) -> int:
    """Configured ``num_classes`` (>= 1), or :func:`reward_classes` of ``info``."""
    if num_classes is None:
        return reward_classes(info, root)
    if int(num_classes) < 1:
        raise ValueError(f"data.num_classes={num_classes}; expected >= 1 or null (infer)")
    return int(num_classes)


def check_metadata(root: Path, info: dict[str, Any], cameras: Sequence[str]) -> list[DataProblem]:
    """Problems with the dataset's metadata: version, cameras, ``reward_bins``, tasks, episode files.

    Every file lerobot would otherwise fetch from the hub must be here; so is every video file.
    """
    info_file = str(info_path(root))
    problems: list[DataProblem] = []

    def bad(path: str | Path, field: str, problem: str) -> None:
        problems.append(DataProblem(str(path), "-", field, problem))

    version = str(info.get("codebase_version", ""))
    major = version.lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) != CODEBASE_MAJOR:
        bad(
            info_file,
            "codebase_version",
            f"{version!r}: lerobot 0.4.4 reads v3.x datasets (convert older ones)",
        )
    features: dict[str, Any] = info["features"]
    if not cameras:
        bad(info_file, "cameras", "no camera configured")
    for camera in cameras:
        feature = features.get(camera)
        if not isinstance(feature, dict):
            bad(
                info_file, camera, f"camera feature missing (cameras here: {camera_features(info) or 'none'})"
            )
        elif feature.get("dtype") not in ("image", "video"):
            bad(info_file, camera, f"dtype {feature.get('dtype')!r} is not an image or video camera")
    reward = features.get(REWARD_KEY)
    if not isinstance(reward, dict):
        bad(info_file, REWARD_KEY, "feature missing: the reward class of each frame")
    elif len(reward.get("shape", ())) > 1:
        bad(info_file, REWARD_KEY, f"shape {reward.get('shape')} is not a vector or a scalar")
    for key in FRAME_COLUMNS:
        if key not in features:
            bad(info_file, key, "feature missing")
    if not (root / "meta" / "tasks.parquet").is_file():
        bad(root / "meta" / "tasks.parquet", "task", "tasks file not found")
    if not any((root / "data").glob("*/*.parquet")):
        bad(root / "data", "file", "no data/chunk-*/file-*.parquet file")
    if not any((root / "meta" / "episodes").glob("*/*.parquet")):
        bad(root / "meta" / "episodes", "file", "no meta/episodes/chunk-*/file-*.parquet file")
        return problems
    if not problems:
        problems += frame_table_problems(root, info)
    videos = [c for c in cameras if isinstance(features.get(c), dict) and features[c].get("dtype") == "video"]
    if videos and not problems:
        problems += _video_file_problems(root, info, videos)
    return problems


def _parquet_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*.parquet"))  # lerobot's order (load_nested_dataset)


def frame_table_problems(root: Path, info: dict[str, Any]) -> list[DataProblem]:
    """What lerobot would meet loading the frame tables, named by file, row and field (lerobot names
    neither): a data file it cannot read, a frame whose ``reward_bins`` has another length than
    info.json declares (lerobot fails the whole dataset with ``DatasetGenerationError``), and an
    episode of ``meta/episodes`` whose frames are not all in ``data/`` (lerobot blames missing files).
    Reads two columns, no pixels. ROW is the row in that parquet file."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shape = info["features"].get(REWARD_KEY, {}).get("shape")
    declared = int(shape[0]) if isinstance(shape, list | tuple) and len(shape) == 1 else 1
    problems: list[DataProblem] = []

    def table(file: Path, columns: list[str]) -> pa.Table | None:
        try:
            return pq.read_table(file, columns=columns)
        except Exception as error:  # pyarrow raises many types for a broken or foreign file
            problems.append(
                DataProblem(str(file), "-", "file", f"cannot read: {type(error).__name__}: {error}")
            )
            return None

    frames: dict[int, int] = {}  # episode -> its frames in data/
    for file in _parquet_files(root / "data"):
        read = table(file, ["episode_index", REWARD_KEY])
        if read is None:
            continue
        episodes = read.column("episode_index").to_numpy()
        for episode, count in zip(*np.unique(episodes, return_counts=True), strict=True):
            frames[int(episode)] = frames.get(int(episode), 0) + int(count)
        kind = read.schema.field(REWARD_KEY).type
        if declared == 1 or (pa.types.is_fixed_size_list(kind) and kind.list_size == declared):
            continue  # a scalar, or every row of the declared length by its type
        listed = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
        lengths = pc.list_value_length(read.column(REWARD_KEY)).to_pylist() if listed else [None] * len(read)
        for row, length in enumerate(lengths):
            if length != declared:
                got = "not a vector" if length is None else f"{length} values"
                problem = f"{got}, info.json declares shape [{declared}] (episode {episodes[row]})"
                problems.append(DataProblem(str(file), row, REWARD_KEY, problem))
    if problems:
        return problems
    for file in _parquet_files(root / "meta" / "episodes"):
        read = table(file, ["episode_index", "length"])
        for row, episode in enumerate(read.to_pylist() if read is not None else []):
            found = frames.get(int(episode["episode_index"]), 0)
            if found != episode["length"]:
                problem = f"episode {episode['episode_index']} has {found} of its {episode['length']} frames in data/"
                problems.append(DataProblem(str(file), row, "length", problem))
    return problems


def _video_file_problems(root: Path, info: dict[str, Any], cameras: list[str]) -> list[DataProblem]:
    """A problem for each mp4 of a video camera that meta/episodes points to but is not there."""
    from lerobot.datasets.utils import load_episodes

    if not info.get("video_path"):
        return [DataProblem(str(info_path(root)), "-", "video_path", "missing: video cameras need it")]
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
    """The image and video features of a dataset, in info.json's order."""
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


def open_local_dataset(root: str | Path, repo_id: str, cameras: Sequence[str]) -> LeRobotDataset:
    """A local LeRobot dataset through lerobot's own reader, after checking its metadata (DataError)."""
    from vlmlab.data.lerobot.offline import LocalLeRobotDataset

    root = Path(root)
    info = read_info(root)  # before LeRobotDataset: it would create a missing root folder
    problems = check_metadata(root, info, cameras)
    if problems:
        raise DataError(problems)
    try:
        # video_backend: lerobot's decoders do not work here (see vlmlab.data.lerobot.video); naming
        # one avoids its torchcodec probe. Frames of video cameras are decoded by decode_video_frame.
        return LocalLeRobotDataset(repo_id, root=root, revision=LOCAL_REVISION, video_backend="pyav")
    except Exception as error:  # lerobot raises many types for a broken folder; name the folder
        raise DataError.one(
            root, "-", "dataset", f"lerobot cannot open it: {type(error).__name__}: {error}"
        ) from error
