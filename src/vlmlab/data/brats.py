"""3D brain-tumour detection (seed 003): BraTS / MSD Task01 MRI volumes as multi-frame video.

Three kinds of source, combined in one :class:`BratsDataModule` (a list of :class:`BratsSource` per split):

``brats``
    A folder of BraTS case folders (or one case folder) ``BraTS-GLI-00000-000/`` holding one NIfTI file
    per modality, ``*-t1c.nii.gz, *-t1n.nii.gz, *-t2f.nii.gz, *-t2w.nii.gz`` (``-`` or ``_`` before the
    name; ``.nii`` too), and the segmentation ``*-seg.nii.gz``. Every non-hidden subfolder is a case,
    except MSD datasets (folders holding ``imagesTr/``), which belong to an ``msd`` source.
``msd``
    A Medical Segmentation Decathlon Task01 folder: ``imagesTr/BRATS_001.nii.gz`` 4-D ``(X, Y, Z, 4)``
    with channels FLAIR, T1w, t1gd, T2w (names from ``dataset.json`` when present) and
    ``labelsTr/BRATS_001.nii.gz``; a 3-D image is a single-modality volume. Names starting with ``.``
    (the archive's ``._BRATS_001.nii.gz`` resource forks) are not cases.
``video``
    The seed's own form: pre-rendered ``.mp4`` videos plus annotations (``.jsonl``, a ``.json`` list,
    an ``.arrow`` file or a ``datasets.save_to_disk`` folder) with ``video`` (path relative to the
    annotation file's folder, or to the ``save_to_disk`` folder), ``bbox_3d``, ``peak_slice``,
    ``tumor_ratio``, optional ``id``, ``modalities`` (names) and ``geometry``. Assumed, as the seed's
    ``fix_dataset_coordinates`` left them: ``bbox_3d`` is in VIDEO coordinates with the edge convention
    of :mod:`vlmlab.data.coords` (x, y pixels of the first modality's frame or tile, z frame indices
    of the first modality's run of frames, upper bounds exclusive), ``peak_slice`` a frame index of
    that run. ``geometry`` (a :meth:`FrameGeometry.to_dict`, as a dict or JSON string) says how the
    video was rendered from its volume, i.e. its modality layout; without it the video is one
    modality, one frame per slice. The video's modalities are split apart with that geometry and
    re-rendered exactly like a volume (its frames are the slices; the intensity window is the
    identity, the frames being 8-bit already), so ``bbox_3d_voxel`` of a video sample is in the
    video's own pixel/frame coordinates.

Ground truth of a NIfTI case, from the segmentation (tumour = label > 0):

* ``bbox_3d_voxel = [x1, y1, z1, x2, y2, z2]``: voxel EDGES in NIfTI order, ``x1`` the smallest tumour
  index and ``x2`` the largest plus one.
* ``peak_slice_voxel``: the index along the slice axis of the slice with the largest tumour area
  (the lowest such index on a tie).
* ``tumor_ratio = tumour voxels / brain voxels``; a brain voxel is a voxel where at least one of the
  modalities the source reads is non-zero, or which is tumour (so the ratio is in ``(0, 1]`` even
  if a skull-stripped scan zeroed a tumour voxel in every modality).

A case without tumour voxels is rejected (``seg: no tumour voxels``): the answer format has no way
to say "no tumour" (``bbox_3d`` is a box), so such cases would teach nothing consistent.

Boxes and the peak slice the model is trained on are in the coordinates of the frames it sees,
mapped from voxels by :func:`vlmlab.data.coords.voxel_box_to_frame` (the bug seed 003 fixed after
the fact cannot recur); ``target`` keeps both and the :class:`FrameGeometry` that links them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from vlmlab.data.base import OnBadSample, Split, VisionLanguageDataModule, keep_good_rows
from vlmlab.data.coords import (
    FrameGeometry,
    Layout,
    fit_tile_size,
    layout_frames,
    nearest_frame,
    outer_int_box,
    split_frames,
    volume_to_stack,
    voxel_box_to_frame,
)
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sample import Sample
from vlmlab.data.sampler import estimate_vision_tokens
from vlmlab.data.volume import VolumeFrames, VolumeWindow

log = logging.getLogger(__name__)

__all__ = [
    "BRATS_MODALITIES",
    "MSD_MODALITIES",
    "PROMPT",
    "BratsDataModule",
    "BratsDataset",
    "BratsRender",
    "BratsSource",
    "NiftiCase",
    "TumourTruth",
    "VideoCase",
    "detect_kind",
    "find_cases",
    "format_answer",
    "tumour_truth",
    "validate_file",
]

Kind = Literal["brats", "msd", "video"]
KINDS = ("brats", "msd", "video")
BRATS_MODALITIES = ("t1c", "t1n", "t2f", "t2w")  # the seed's order: T1C, T1N, T2F, T2W
MSD_MODALITIES = ("FLAIR", "T1w", "t1gd", "T2w")  # MSD Task01 channel order (dataset.json "modality")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ANNOTATION_SUFFIXES = (".jsonl", ".json", ".arrow")

# MRI: each modality windowed to its own 0.5-99.5 percentiles of non-zero (brain) voxels.
DEFAULT_FRAMES = VolumeFrames(num_frames=32, window=VolumeWindow("percentile", 0.5, 99.5))

# Seg-Zero style: reasoning in <think>, JSON answer in <answer>; thinking must start "This video shows".
PROMPT = (
    "This video shows a brain MRI scan: {layout}. Find the brain tumour. Give its 3D bounding box "
    "[x1, y1, z1, x2, y2, z2] in the {pane} ({width}x{height} pixels): x, y are pixel edges and z are "
    "frame indices 0-{last_frame}, with x2, y2, z2 exclusive; the frame with the largest tumour area "
    "(peak_slice); and the tumour's fraction of the brain volume (tumor_ratio). Output the thinking "
    'process in <think> </think>, starting with "This video shows", and the final answer in '
    "<answer> </answer> tags as JSON, i.e. <think> thinking process here </think>"
    '<answer>{{"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": n, "tumor_ratio": r}}</answer>'
)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class BratsSource:
    """One dataset of a split: ``kind`` brats | msd | video, ``path`` (relative to the datamodule's root
    unless absolute), ``name`` (prefix of sample ids; default the path), ``modalities`` (brats: file
    name suffixes, default t1c, t1n, t2f, t2w; msd: channel names to keep, default all; video: names).
    """

    kind: Kind
    path: str
    name: str | None = None
    modalities: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"source kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(str(m) for m in self.modalities))
            if not self.modalities:
                raise ValueError(f"source {self.path}: modalities is empty (use null for the default)")
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "name", str(self.name) if self.name is not None else str(self.path))

    @classmethod
    def coerce(cls, value: BratsSource | Mapping[str, Any]) -> BratsSource:
        """A source from itself or a mapping (Hydra turns instantiated dataclasses in lists into DictConfigs)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls(**{k: value[k] for k in value if k not in ("_target_",)})
        raise TypeError(f"expected a BratsSource or a mapping, got {type(value).__name__}")


@dataclass(frozen=True)
class BratsRender:
    """How a case becomes the model's video, prompt and answer.

    frames: per-modality volume -> frames (temporal resampling, spatial size, intensity window, fps).
    layout: ``sequence`` (modalities one after another) or ``tiled`` (a ``grid`` of tiles per frame).
    slice_axis: the NIfTI axis that becomes time (2: axial slices, as the seed).
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


# ---------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class TumourTruth:
    """Ground truth in voxels; see the module docstring for the exact definitions."""

    bbox_3d: list[int]
    peak_slice: int
    tumor_ratio: float
    tumour_voxels: int
    brain_voxels: int


def tumour_truth(
    seg: np.ndarray, modalities: Sequence[np.ndarray], slice_axis: int = 2
) -> TumourTruth | None:
    """Box (voxel edges), peak slice and tumour/brain ratio from a segmentation ``(X, Y, Z)``.

    modalities: the ``(X, Y, Z)`` volumes defining the brain (any non-zero, or tumour).
    Returns None when there is no tumour voxel (label > 0).
    """
    tumour = np.asarray(seg) > 0
    count = int(tumour.sum())
    if count == 0:
        return None
    box_lo, box_hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(tumour.any(axis=other))
        box_lo.append(int(present[0]))
        box_hi.append(int(present[-1]) + 1)
    area = tumour.sum(axis=tuple(a for a in range(3) if a != slice_axis))
    brain = tumour.copy()
    for volume in modalities:
        brain |= np.asarray(volume) != 0
    brain_count = int(brain.sum())
    return TumourTruth(box_lo + box_hi, int(np.argmax(area)), count / brain_count, count, brain_count)


def format_answer(box: Sequence[int], peak: int, ratio: float) -> str:
    """The SFT target: ``<think>This video shows ...</think><answer>{json}</answer>`` (frame coordinates)."""
    x1, y1, z1, x2, y2, z2 = (int(v) for v in box)
    # Short on purpose: the prompt already describes the layout, and every token of a rollout costs a
    # vocabulary-wide sampling step.
    think = f"This video shows the tumour in frames {z1} to {z2 - 1}, largest in frame {peak}."
    answer = json.dumps(
        {"bbox_3d": [x1, y1, z1, x2, y2, z2], "peak_slice": int(peak), "tumor_ratio": round(ratio, 4)}
    )
    return f"<think>{think}</think><answer>{answer}</answer>"


def _layout_text(names: Sequence[str], geometry: FrameGeometry) -> tuple[str, str]:
    """(how the modalities are laid out, where the box lives) in words for the prompt and the thinking.

    names: the modalities' names, or empty when unknown (a video without ``modalities``).
    """
    count = geometry.num_modalities
    what = f"{count} MRI sequence{'s' if count > 1 else ''}"
    if names:
        what += f" ({', '.join(n.upper() for n in names)})"
    f = geometry.frames_per_modality
    if geometry.grid is None:
        if count == 1:
            return f"{what} in {f} frames", "frames"
        return f"{what} one after another, {f} frames each", f"first {f} frames"
    rows, cols = geometry.grid
    return f"{what} tiled {rows}x{cols} in each of {f} frames", "top-left tile"


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
    """Assemble the sample: prompt, answer and target in the model's frame coordinates (via coords.py)."""
    frame_box = voxel_box_to_frame(voxel_box, geometry)
    peak = nearest_frame(peak_voxel, geometry)
    layout_text, pane = _layout_text(names, geometry)
    height, width = geometry.tile_size
    prompt = render.prompt.format(
        layout=layout_text, pane=pane, width=width, height=height, last_frame=geometry.frames_per_modality - 1
    )
    return Sample(
        id=sample_id,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": video, "fps": render.frames.fps},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        target={
            "bbox_3d": frame_box,
            "peak_slice": peak,
            "tumor_ratio": float(ratio),
            "bbox_3d_voxel": [float(v) for v in voxel_box],
            "peak_slice_voxel": int(peak_voxel),
            "geometry": geometry.to_dict(),
        },
        answer=format_answer(outer_int_box(frame_box), peak, ratio),
        metadata={**metadata, "modalities": list(names)},
    )


# ---------------------------------------------------------------------------- NIfTI cases


class _Problems(list):
    """Problems of one case/row: ``add(path, field, problem)`` with the row fixed."""

    def __init__(self, row: int | str):
        super().__init__()
        self.row = row

    def add(self, path: str | Path, field: str, problem: str) -> None:
        self.append(DataProblem(str(path), self.row, field, problem))


def _nifti_image(path: Path) -> Any:
    import nibabel as nib  # lazy: keeps `import vlmlab.data.brats` light

    return nib.load(str(path))


def _nifti_shape(path: Path) -> tuple[int, ...]:
    """Shape from the header only; a trailing singleton 4th axis is dropped (single-timepoint files)."""
    shape = tuple(int(s) for s in _nifti_image(path).shape)
    return shape[:3] if len(shape) == 4 and shape[3] == 1 else shape


def _nifti_data(path: Path) -> np.ndarray:
    data = np.asarray(_nifti_image(path).dataobj, dtype=np.float32)
    return data[..., 0] if data.ndim == 4 and data.shape[3] == 1 else data


@dataclass(frozen=True)
class NiftiCase:
    """One BraTS case folder or MSD image: per modality its file and channel (None: a 3-D file).

    files[m] is None when no file matched modality m (reported by :meth:`check`); ``where[m]`` names
    what was looked for. ``index`` is the case's row in its source (sorted by name).
    """

    id: str
    index: int
    kind: Kind
    modalities: tuple[str, ...]
    files: tuple[Path | None, ...]
    where: tuple[str, ...]
    channels: tuple[int | None, ...]
    seg: Path | None
    seg_where: str
    found: tuple[DataProblem, ...] = ()  # problems met while discovering the case

    def check(self, decode: bool = False, slice_axis: int = 2) -> list[DataProblem]:
        """Files exist and agree in shape (headers); with ``decode`` also finite voxels and a tumour."""
        problems = _Problems(self.index)
        problems.extend(self.found)
        headers: dict[Path, tuple[int, ...] | None] = {}
        shapes: list[tuple[Path, str, tuple[int, ...]]] = []  # (file, modality, spatial shape)
        for name, path, channel in zip(self.modalities, self.files, self.channels, strict=True):
            if path is None:
                continue  # reported at discovery
            if path not in headers:
                headers[path] = self._header(path, name, problems)
            shape = headers[path]
            if shape is None:
                continue
            if channel is None and len(shape) != 3:
                problems.add(path, name, f"expected a 3-D volume (X, Y, Z), got shape {list(shape)}")
            elif channel is not None and (len(shape) != 4 or shape[3] <= channel):
                problems.add(
                    path, name, f"expected a 4-D volume with > {channel} channels, got shape {list(shape)}"
                )
            else:
                shapes.append((path, name, shape[:3]))
        if self.seg is not None:
            seg_shape = self._header(self.seg, "seg", problems)
            if seg_shape is not None and len(seg_shape) != 3:
                problems.add(
                    self.seg, "seg", f"expected a 3-D label volume (X, Y, Z), got shape {list(seg_shape)}"
                )
            elif seg_shape is not None:
                shapes.append((self.seg, "seg", seg_shape))
        if shapes:
            _, ref_name, ref_shape = shapes[0]
            for path, name, shape in shapes[1:]:
                if shape != ref_shape:
                    problems.add(
                        path, name, f"shape {list(shape)} differs from {ref_name}'s {list(ref_shape)}"
                    )
        if decode and not problems:
            try:
                self.load(slice_axis)
            except DataError as error:
                problems.extend(error.problems)
        return list(problems)

    @staticmethod
    def _header(path: Path, field: str, problems: _Problems) -> tuple[int, ...] | None:
        try:
            return _nifti_shape(path)
        except FileNotFoundError:
            problems.add(path, field, "file not found")
        except Exception as error:
            problems.add(path, field, f"unreadable NIfTI file ({type(error).__name__}: {error})")
        return None

    def load(self, slice_axis: int = 2) -> tuple[list[np.ndarray], TumourTruth]:
        """Every modality ``(X, Y, Z)`` float32 and the ground truth; DataError naming file and field."""
        problems = _Problems(self.index)
        cache: dict[Path, np.ndarray] = {}
        volumes = []
        for name, path, channel in zip(self.modalities, self.files, self.channels, strict=True):
            if path is None:
                raise DataError(
                    [DataProblem(self.where[self.modalities.index(name)], self.index, name, "file not found")]
                )
            if path not in cache:
                cache[path] = self._read(path, name)
            data = cache[path] if channel is None else cache[path][..., channel]
            if not np.isfinite(data).all():
                problems.add(path, name, "volume contains non-finite values (NaN or inf)")
            volumes.append(data)
        if self.seg is None:
            raise DataError([DataProblem(self.seg_where, self.index, "seg", "segmentation file not found")])
        seg = self._read(self.seg, "seg")
        if seg.shape != volumes[0].shape:
            problems.add(
                self.seg, "seg", f"shape {list(seg.shape)} differs from the images' {list(volumes[0].shape)}"
            )
        if problems:
            raise DataError(list(problems))
        truth = tumour_truth(seg, volumes, slice_axis)
        if truth is None:
            raise DataError([DataProblem(str(self.seg), self.index, "seg", "no tumour voxels (label > 0)")])
        return volumes, truth

    def _read(self, path: Path, field: str) -> np.ndarray:
        try:
            return _nifti_data(path)
        except FileNotFoundError as error:
            raise DataError([DataProblem(str(path), self.index, field, "file not found")]) from error
        except Exception as error:
            problem = f"unreadable NIfTI file ({type(error).__name__}: {error})"
            raise DataError([DataProblem(str(path), self.index, field, problem)]) from error

    def sample(self, source: str, render: BratsRender) -> Sample:
        volumes, truth = self.load(render.slice_axis)
        stacks = [volume_to_stack(v, render.slice_axis) for v in volumes]
        geometry = render.geometry(stacks[0].shape, len(stacks))
        return make_sample(
            f"{source}/{self.id}",
            render.video(stacks, geometry),
            geometry,
            self.modalities,
            truth.bbox_3d,
            truth.peak_slice,
            truth.tumor_ratio,
            render,
            {
                "source": source,
                "kind": self.kind,
                "case": self.id,
                "row": self.index,
                "files": [*sorted({str(p) for p in self.files if p is not None}), str(self.seg)],
            },
        )


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _match(folder: Path, suffix: str) -> list[Path]:
    """Files of ``folder`` named ``*-{suffix}.nii[.gz]`` or ``*_{suffix}.nii[.gz]`` (case-insensitive)."""
    wanted = tuple(f"{sep}{suffix.lower()}{ext}" for sep in "-_" for ext in NIFTI_SUFFIXES)
    return sorted(p for p in folder.iterdir() if _is_nifti(p) and p.name.lower().endswith(wanted))


def _brats_case(folder: Path, index: int, modalities: Sequence[str]) -> NiftiCase:
    files, where, found = [], [], []
    for name in (*modalities, "seg"):
        matches = _match(folder, name)
        pattern = str(folder / f"*-{name}.nii.gz")
        if len(matches) == 1:
            files.append(matches[0])
            where.append(str(matches[0]))
            continue
        files.append(None)
        where.append(pattern)
        if matches:
            problem = f"{len(matches)} files match: {', '.join(p.name for p in matches)}"
        else:
            problem = f"file not found (no *-{name}.nii.gz / *_{name}.nii.gz in the case folder)"
        found.append(DataProblem(pattern, index, name, problem))
    return NiftiCase(
        id=folder.name,
        index=index,
        kind="brats",
        modalities=tuple(modalities),
        files=tuple(files[:-1]),
        where=tuple(where[:-1]),
        channels=(None,) * len(modalities),
        seg=files[-1],
        seg_where=where[-1],
        found=tuple(found),
    )


def _is_msd(folder: Path) -> bool:
    return (folder / "imagesTr").is_dir()


def _is_case_folder(folder: Path) -> bool:
    return folder.is_dir() and any(_is_nifti(p) for p in folder.iterdir())


def find_brats_cases(path: Path, modalities: Sequence[str] | None = None) -> list[NiftiCase]:
    """The cases of a BraTS dataset folder (every non-hidden, non-MSD subfolder) or of one case folder."""
    names = tuple(modalities or BRATS_MODALITIES)
    if not path.is_dir():
        raise DataError.one(path, "-", "path", "BraTS folder not found")
    if _is_case_folder(path):
        return [_brats_case(path, 0, names)]
    folders = sorted(
        p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and not _is_msd(p)
    )
    return [_brats_case(folder, i, names) for i, folder in enumerate(folders)]


def _msd_names(path: Path) -> tuple[str, ...] | None:
    """Channel names from an MSD ``dataset.json`` (``"modality": {"0": "FLAIR", ...}``), if any."""
    meta = path / "dataset.json"
    if not meta.is_file():
        return None
    try:
        modality = json.loads(meta.read_text()).get("modality")
    except (json.JSONDecodeError, AttributeError) as error:
        raise DataError.one(meta, "-", "json", f"unreadable dataset.json ({error})") from error
    if not isinstance(modality, dict):
        return None
    return tuple(str(modality[k]) for k in sorted(modality, key=int))


def find_msd_cases(path: Path, modalities: Sequence[str] | None = None) -> list[NiftiCase]:
    """The cases of an MSD Task01 folder: ``imagesTr/*.nii.gz`` with ``labelsTr/`` of the same name."""
    images_dir, labels_dir = path / "imagesTr", path / "labelsTr"
    if not images_dir.is_dir():
        raise DataError.one(images_dir, "-", "imagesTr", "MSD images folder not found")
    names = _msd_names(path)
    cases = []
    for index, image in enumerate(sorted(p for p in images_dir.iterdir() if _is_nifti(p))):
        found = []
        label = labels_dir / image.name
        if not label.is_file():
            found.append(DataProblem(str(label), index, "seg", "label file not found"))
        try:
            shape = _nifti_shape(image)
        except Exception:
            shape = ()  # reported by check()
        case_id = image.name.split(".")[0]
        if len(shape) == 3:
            channel_names = names if names is not None and len(names) == 1 else ("MRI",)
            chosen: list[tuple[str, int | None]] = [(channel_names[0], None)]
            if modalities is not None:
                chosen = [(modalities[0], None)]
                if len(modalities) > 1:
                    problem = f"a 3-D image has one modality, {len(modalities)} requested"
                    found.append(DataProblem(str(image), index, "modalities", problem))
        else:
            channels = shape[3] if len(shape) == 4 else len(MSD_MODALITIES)
            channel_names = names if names is not None else MSD_MODALITIES[:channels]
            lookup = {n.lower(): c for c, n in enumerate(channel_names)}
            chosen = []
            for name in modalities or channel_names:
                if name.lower() in lookup:
                    chosen.append((name, lookup[name.lower()]))
                else:
                    problem = f"no channel {name!r}; channels are {', '.join(channel_names)}"
                    found.append(DataProblem(str(image), index, "modalities", problem))
            if not chosen:
                chosen = [(channel_names[0], 0)]
        cases.append(
            NiftiCase(
                id=case_id,
                index=index,
                kind="msd",
                modalities=tuple(n for n, _ in chosen),
                files=(image,) * len(chosen),
                where=(str(image),) * len(chosen),
                channels=tuple(c for _, c in chosen),
                seg=label if label.is_file() else None,
                seg_where=str(label),
                found=tuple(found),
            )
        )
    return cases


# ---------------------------------------------------------------------------- video cases


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
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class VideoCase:
    """One annotation row of a ``video`` source (see the module docstring for the fields)."""

    id: str
    index: int
    annotation: Path
    folders: tuple[Path, ...]  # relative video paths resolve in the first of these holding the file
    row: Any

    def _geometry(self) -> FrameGeometry | None:
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
        problems = _Problems(self.index)
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
            geometry = self._geometry()
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
            video_geometry = self._geometry() or FrameGeometry(grey.shape)
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
        rows = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError.one(path, f"line {line_no}", "json", error.msg) from error
        return rows, (path.parent,)
    if name.endswith(".json"):
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise DataError.one(path, f"line {error.lineno}", "json", error.msg) from error
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


def detect_kind(path: Path) -> Kind:
    """Guess a path's kind: annotation file or save_to_disk folder -> video, ``imagesTr/`` -> msd, else brats."""
    if path.is_file() or path.name.lower().endswith(ANNOTATION_SUFFIXES):
        return "video"
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return "video"
    return "msd" if _is_msd(path) else "brats"


def find_cases(source: BratsSource, path: Path) -> list[NiftiCase | VideoCase]:
    """The cases of a source at ``path`` (headers not read yet: see ``check``). DataError for the source itself."""
    if source.kind == "brats":
        return list(find_brats_cases(path, source.modalities))
    if source.kind == "msd":
        return list(find_msd_cases(path, source.modalities))
    return list(find_video_cases(path))


def _check(case: NiftiCase | VideoCase, decode: bool, slice_axis: int) -> list[DataProblem]:
    return case.check(decode) if isinstance(case, VideoCase) else case.check(decode, slice_axis)


def validate_file(path: str | Path, decode: bool = True) -> list[DataProblem]:
    """Every problem of a BraTS case / dataset folder, an MSD folder or an annotation file.

    ``python -m vlmlab.tools.validate brats PATH``. A BraTS dataset folder's nested MSD datasets are
    validated too (a split folder may hold both). ``decode`` reads every voxel / frame: finite values,
    a non-empty tumour, boxes inside the video.
    """
    path = Path(path)
    if not path.exists():
        return [DataProblem(str(path), "-", "path", "not found")]
    kind = detect_kind(path)
    paths = [(kind, path)]
    if kind == "brats" and path.is_dir() and not _is_case_folder(path):
        paths += [
            ("msd", p)
            for p in sorted(path.iterdir())
            if p.is_dir() and not p.name.startswith(".") and _is_msd(p)
        ]
    problems: list[DataProblem] = []
    total = 0
    for kind, where in paths:
        try:
            cases = find_cases(BratsSource(kind, str(where)), where)
        except DataError as error:
            problems += error.problems
            continue
        total += len(cases)
        for case in cases:
            problems += _check(case, decode, 2)
    if total == 0 and not problems:
        problems.append(DataProblem(str(path), "-", "cases", "no cases found"))
    return problems


class BratsDataset(Dataset):
    """The cases of one source, checked at construction (existence, headers, fields), decoded lazily.

    What only decoding shows (an empty segmentation, non-finite voxels, a corrupt video stream) raises
    a DataError naming file, row and field when the case is loaded: run ``validate_file`` (decode) first.
    """

    def __init__(
        self, source: BratsSource, path: str | Path, render: BratsRender, on_bad_sample: OnBadSample = "raise"
    ):
        self.source = source
        self.path = Path(path)
        self.render = render
        cases = find_cases(source, self.path)
        if not cases:
            raise DataError.one(self.path, "-", "cases", f"no {source.kind} cases found")
        problems = [p for case in cases for p in _check(case, False, render.slice_axis)]
        self.cases = keep_good_rows(cases, problems, on_bad_sample, self.path)
        self.skipped = len(cases) - len(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int) -> Sample:
        return self.cases[i].sample(self.source.name, self.render)

    def sample_costs(self) -> list[float]:
        """Estimated vision tokens per case, an upper bound from the render settings: every
        modality's ``num_frames`` frames at ``size`` (tiling moves pixels, it does not add any)."""
        frames = self.render.frames
        h, w = frames.size if frames.size is not None else (224, 224)
        per_modality = frames.num_frames or 32
        return [float(estimate_vision_tokens(per_modality * len(case.modalities), h, w)) for case in self.cases]


# ---------------------------------------------------------------------------- datamodule


def fit_render_to_processor(render: BratsRender, processor: Any, num_modalities: int = 4) -> BratsRender:
    """``render`` with a frame size the processor keeps unchanged, so boxes mapped to our frames are
    the coordinates the model sees (e.g. ``preset=tiny`` bounds frames to 56x56 pixels)."""
    frames = render.frames
    size = tuple(frames.size) if frames.size is not None else (224, 224)
    geometry = render.geometry((frames.num_frames or 32, *size), num_modalities)
    tile = fit_tile_size(processor, geometry)
    if tile == size:
        return render
    log.info("frames resized from %sx%s to %sx%s so that the processor keeps them as they are", *size, *tile)
    return replace(render, frames=replace(frames, size=tile))


class BratsDataModule(VisionLanguageDataModule):
    """Brain-tumour detection from one or more sources per split, concatenated (``ConcatDataset``).

    train_sources / val_sources / test_sources: :class:`BratsSource` lists (paths relative to ``root``).
    frames / layout / grid / slice_axis / prompt: see :class:`BratsRender`.
    synth_cases: training cases written by ``write_synthetic`` (``preset=tiny``).
    Other arguments (root, collator, batch sizes, workers, synthesize, on_bad_sample): the base class.
    """

    def __init__(
        self,
        train_sources: Iterable[BratsSource | Mapping[str, Any]] = (),
        val_sources: Iterable[BratsSource | Mapping[str, Any]] = (),
        test_sources: Iterable[BratsSource | Mapping[str, Any]] = (),
        frames: VolumeFrames | None = None,
        layout: Layout = "sequence",
        grid: Sequence[int] | None = None,
        slice_axis: int = 2,
        prompt: str | None = None,
        synth_cases: int = 24,
        **kwargs: Any,
    ):
        super().__init__(train_file=None, val_file=None, test_file=None, **kwargs)
        self.sources: dict[Split, list[BratsSource]] = {
            "train": [BratsSource.coerce(s) for s in train_sources or ()],
            "val": [BratsSource.coerce(s) for s in val_sources or ()],
            "test": [BratsSource.coerce(s) for s in test_sources or ()],
        }
        self.render = BratsRender(
            frames=frames if frames is not None else DEFAULT_FRAMES,
            layout=layout,
            grid=None if grid is None else tuple(grid),
            slice_axis=slice_axis,
            prompt=prompt or PROMPT,
        )
        self.synth_cases = synth_cases

    def source_path(self, source: BratsSource) -> Path:
        path = Path(source.path)
        return path if path.is_absolute() else self.root / path

    def split_path(self, split: Split) -> Path | None:
        """The first source's path of a split (None without sources)."""
        sources = self.sources[split]
        return self.source_path(sources[0]) if sources else None

    def build_dataset(self, path: Path) -> BratsDataset:
        """One dataset from a path, its kind guessed by :func:`detect_kind`."""
        return BratsDataset(BratsSource(detect_kind(path), str(path)), path, self.render, self.on_bad_sample)

    def build_split(self, split: Split) -> Dataset | None:
        sources = self.sources[split]
        if not sources:
            return None
        parts = [BratsDataset(s, self.source_path(s), self.render, self.on_bad_sample) for s in sources]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def missing_split_hint(self, split: Split) -> str:
        return f"set data.{split}_sources"

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets and self.collator is not None:
            self.render = fit_render_to_processor(self.render, self.collator.processor)
        super().setup(stage)

    def has_data(self) -> bool:
        return all(self.source_path(s).exists() for split in self.sources.values() for s in split)

    def write_synthetic(self, root: Path) -> None:
        from vlmlab.data.synthetic.brats import write

        write(root, num_train=self.synth_cases)
