"""Pre-rendered MRI videos with annotations (the BraTS recipe's own form).

``.mp4`` videos plus annotations (``.jsonl``, a ``.json`` list, an ``.arrow`` file or a
``datasets.save_to_disk`` folder) with ``video`` (path relative to the annotation file's folder, or
to the ``save_to_disk`` folder), ``bbox_3d``, ``peak_slice``, ``tumor_ratio``, optional ``id``,
``modalities`` (names) and ``geometry``. Assumed, as the recipe's coordinate fix left them:
``bbox_3d`` is in VIDEO coordinates with the edge convention of :mod:`vlmlab.tasks.coords` (x, y
pixels of the first modality's frame or tile, z frame indices of the first modality's run of frames,
upper bounds exclusive), ``peak_slice`` a frame index of that run. ``geometry`` (a
:meth:`FrameGeometry.to_dict`, as a dict or JSON string) says how the video was rendered from its
volume, i.e. its modality layout; without it the video is one modality, one frame per slice. The
video's modalities are split apart with that geometry and re-rendered exactly like a volume (its
frames are the slices; the intensity window is the identity, the frames being 8-bit already), so
``bbox_3d_voxel`` of a video sample is in the video's own pixel/frame coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from vlmlab.data.brats.render import BratsRender, make_sample
from vlmlab.data.errors import DataError, DataProblem, RowProblems
from vlmlab.data.files import read_json, read_jsonl
from vlmlab.data.sample import Sample
from vlmlab.data.volume import VolumeWindow
from vlmlab.tasks.coords import FrameGeometry, split_frames
from vlmlab.tasks.numbers import finite_number

__all__ = ["ANNOTATION_SUFFIXES", "VideoCase", "find_video_cases", "read_annotations"]

ANNOTATION_SUFFIXES = (".jsonl", ".json", ".arrow")


def _read_video(path: Path, header_only: bool) -> tuple[np.ndarray | None, tuple[int, int, int]]:
    """(uint8 RGB frames [T, H, W, 3] or None, (T, H, W)); T is 0 when a header does not say."""
    import av  # lazy: only video sources need it

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        height, width = stream.codec_context.height, stream.codec_context.width
        if header_only:
            return None, (int(stream.frames), height, width)
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    return frames, frames.shape[:3]


def _number(value: Any) -> bool:
    return finite_number(value) is not None


@dataclass(frozen=True)
class VideoCase:
    """One annotation row of a ``video`` source (see the module docstring for the fields)."""

    id: str
    index: int
    annotation: Path
    folders: tuple[Path, ...]  # relative video paths resolve in the first of these holding the file
    row: Any

    def geometry(self) -> FrameGeometry | None:
        geometry = self.row.get("geometry")
        if geometry is None:
            return None
        if isinstance(geometry, str):
            geometry = json.loads(geometry)
        return FrameGeometry.from_dict(geometry)

    def video_path(self) -> Path:
        path = Path(self.row["video"])
        if path.is_absolute():
            return path
        candidates = [folder / path for folder in self.folders]
        return next((c for c in candidates if c.is_file()), candidates[0])

    def check(self, decode: bool = False) -> list[DataProblem]:
        """Fields, box inside the video (geometry or header), file exists; ``decode`` reads every frame."""
        problems = RowProblems(self.index)
        where = self.annotation
        row = self.row
        if not isinstance(row, Mapping):
            problems.add(where, "row", f"expected an object, got {type(row).__name__}")
            return list(problems)
        if not isinstance(row.get("video"), str) or not row["video"]:
            problems.add(where, "video", "missing or not a path string")
        box = row.get("bbox_3d")
        if not (isinstance(box, list | tuple) and len(box) == 6 and all(_number(v) for v in box)):
            problems.add(where, "bbox_3d", f"expected 6 finite numbers [x1, y1, z1, x2, y2, z2], got {box!r}")
            box = None
        elif any(box[k] >= box[k + 3] for k in range(3)) or min(box) < 0:
            problems.add(
                where, "bbox_3d", f"expected 0 <= x1 < x2, 0 <= y1 < y2, 0 <= z1 < z2, got {list(box)}"
            )
            box = None
        peak = row.get("peak_slice")
        if not (_number(peak) and float(peak).is_integer() and peak >= 0):
            problems.add(where, "peak_slice", f"expected a non-negative integer frame index, got {peak!r}")
            peak = None
        ratio = row.get("tumor_ratio")
        if not (_number(ratio) and 0 < ratio <= 1):
            problems.add(where, "tumor_ratio", f"expected a number in (0, 1], got {ratio!r}")
        names = row.get("modalities")
        if names is not None and not (
            isinstance(names, list | tuple) and all(isinstance(n, str) for n in names)
        ):
            problems.add(where, "modalities", f"expected a list of names, got {names!r}")
        try:
            geometry = self.geometry()
        except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
            problems.add(where, "geometry", f"not a FrameGeometry dict ({error})")
            return list(problems)
        if names is not None and geometry is not None and len(names) != geometry.num_modalities:
            problems.add(where, "modalities", f"{len(names)} names for {geometry.num_modalities} modalities")
        if problems:
            return list(problems)
        path = self.video_path()
        if not path.is_file():
            problems.add(where, "video", f"file not found: {path}")
            return list(problems)
        try:
            _frames, (t, h, w) = _read_video(path, header_only=not decode)
        except Exception as error:
            problems.add(where, "video", f"unreadable video {path} ({type(error).__name__}: {error})")
            return list(problems)
        if geometry is not None:
            if (h, w) != geometry.frame_shape or (t and t != geometry.total_frames):
                problems.add(
                    where,
                    "geometry",
                    f"video {path} is [T={t}, H={h}, W={w}] but the geometry renders "
                    f"[{geometry.total_frames}, {geometry.frame_shape[0]}, {geometry.frame_shape[1]}]",
                )
                return list(problems)
            t = geometry.frames_per_modality
            h, w = geometry.tile_size
        if t and box[5] > t:
            problems.add(where, "bbox_3d", f"box {list(box)} ends after the video's {t} frames (z2 <= {t})")
        if t and peak >= t:
            problems.add(where, "peak_slice", f"frame {peak} outside the video's {t} frames")
        if box[3] > w or box[4] > h:
            problems.add(
                where, "bbox_3d", f"box {list(box)} outside the {w}x{h} frame (x2 <= {w}, y2 <= {h})"
            )
        return list(problems)

    def sample(self, source: str, render: BratsRender) -> Sample:
        path = self.video_path()
        try:
            frames, _ = _read_video(path, header_only=False)
            grey = frames.astype(np.float32).mean(
                axis=-1
            )  # rendered MRI is grey: R = G = B up to coding noise
            video_geometry = self.geometry() or FrameGeometry(grey.shape)
            stacks = split_frames(grey, video_geometry)
        except Exception as error:
            raise DataError.one(
                self.annotation, self.index, "video", f"{path}: {type(error).__name__}: {error}"
            ) from error
        names = list(self.row.get("modalities") or [])
        # The video's frames are the slices (axis 2 of its own (x, y, frame) coordinates), already 8-bit.
        geometry = render.geometry(stacks[0].shape, len(stacks), slice_axis=2)
        video = render.video(stacks, geometry, window=VolumeWindow("fixed", 0.0, 255.0))
        return make_sample(
            f"{source}/{self.id}",
            video,
            geometry,
            names,
            [float(v) for v in self.row["bbox_3d"]],
            int(self.row["peak_slice"]),
            float(self.row["tumor_ratio"]),
            render,
            {
                "source": source,
                "kind": "video",
                "case": self.id,
                "row": self.index,
                "annotation": str(self.annotation),
                "video": str(path),
                "video_geometry": video_geometry.to_dict(),
            },
        )


def read_annotations(path: Path) -> tuple[list[Any], tuple[Path, ...]]:
    """Rows of an annotation file (jsonl, json list, arrow, save_to_disk folder) and where videos resolve.

    Relative video paths resolve in the annotation file's folder (jsonl, json), or for arrow data in
    the ``save_to_disk`` folder (the ``.arrow`` file's folder) and then its parent.
    """
    name = path.name.lower()
    if path.is_dir():
        if not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            raise DataError.one(path, "-", "path", "not a datasets.save_to_disk folder (no state.json)")
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:
            raise DataError.one(
                path, "-", "arrow", f"unreadable dataset ({type(error).__name__}: {error})"
            ) from error
        if isinstance(loaded, datasets.DatasetDict):
            raise DataError.one(
                path,
                "-",
                "arrow",
                f"a DatasetDict ({', '.join(loaded)}): point the source at one split folder",
            )
        return loaded.to_list(), (path, path.parent)
    if not path.is_file():
        raise DataError.one(path, "-", "file", "annotation file not found")
    if name.endswith(".arrow"):
        import datasets

        try:
            return datasets.Dataset.from_file(str(path)).to_list(), (path.parent, path.parent.parent)
        except Exception as error:
            raise DataError.one(
                path, "-", "arrow", f"unreadable arrow file ({type(error).__name__}: {error})"
            ) from error
    if name.endswith(".jsonl"):
        numbered, problems = read_jsonl(path)
        if problems:  # named "line N": this source's rows are numbered from 0
            raise DataError([replace(p, row=f"line {p.row}") for p in problems])
        return [row for _, row in numbered], (path.parent,)
    if name.endswith(".json"):
        rows = read_json(path)
        if not isinstance(rows, list):
            raise DataError.one(path, "-", "json", "expected a JSON list of rows")
        return rows, (path.parent,)
    raise DataError.one(
        path, "-", "file", f"unsupported annotation file; expected {', '.join(ANNOTATION_SUFFIXES)}"
    )


def find_video_cases(path: Path) -> list[VideoCase]:
    rows, folders = read_annotations(path)
    cases = []
    for index, row in enumerate(rows):
        given = row.get("id") if isinstance(row, Mapping) else None
        case_id = (
            str(given) if isinstance(given, str | int) and not isinstance(given, bool) else f"row{index}"
        )
        cases.append(VideoCase(case_id, index, path, folders, row))
    return cases


# ---------------------------------------------------------------------------- sources and validation
