"""The sources of a split (:class:`BratsSource`), their cases and their validation.

Three kinds of source can be combined in one split: ``brats`` and ``msd`` NIfTI folders
(:mod:`.folders`) and ``video`` annotation files (:mod:`.video`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vlmlab.data.brats.folders import find_brats_cases, find_msd_cases, is_case_folder, is_msd
from vlmlab.data.brats.nifti import NiftiCase
from vlmlab.data.brats.render import BratsRender
from vlmlab.data.brats.video import ANNOTATION_SUFFIXES, VideoCase, find_video_cases
from vlmlab.data.checks import Check, decodes, level_of
from vlmlab.data.errors import Checked, DataError, DataProblem
from vlmlab.data.sample import Sample

__all__ = [
    "KINDS",
    "BratsCase",
    "BratsSource",
    "Kind",
    "check_cases",
    "detect_kind",
    "find_cases",
    "read_source",
    "validate_file",
]

Kind = Literal["brats", "msd", "video"]
KINDS = ("brats", "msd", "video")


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
class BratsCase:
    """One case of a source: what the datamodule keeps per sample (``source``: the id prefix)."""

    source: str
    case: NiftiCase | VideoCase

    def check(self, decode: bool = False, slice_axis: int = 2) -> list[DataProblem]:
        if isinstance(self.case, VideoCase):
            return self.case.check(decode)
        return self.case.check(decode, slice_axis)

    def sample(self, render: BratsRender) -> Sample:
        return self.case.sample(self.source, render)

    @property
    def num_modalities(self) -> int:
        """Modalities of the case's video (a video without geometry: one)."""
        if isinstance(self.case, NiftiCase):
            return len(self.case.modalities)
        try:
            geometry = self.case.geometry()
        except (ValueError, TypeError):
            return 1  # reported by check()
        return 1 if geometry is None else geometry.num_modalities


def detect_kind(path: Path) -> Kind:
    """Guess a path's kind: annotation file or save_to_disk folder -> video, ``imagesTr/`` -> msd, else brats."""
    if path.is_file() or path.name.lower().endswith(ANNOTATION_SUFFIXES):
        return "video"
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return "video"
    return "msd" if is_msd(path) else "brats"


def find_cases(source: BratsSource, path: Path) -> list[NiftiCase | VideoCase]:
    """The cases of a source at ``path`` (headers not read yet: see ``check``). DataError for the source itself."""
    if source.kind == "brats":
        return list(find_brats_cases(path, source.modalities))
    if source.kind == "msd":
        return list(find_msd_cases(path, source.modalities))
    return list(find_video_cases(path))


def check_cases(
    cases: list[BratsCase], check: Check = "headers", slice_axis: int = 2
) -> list[list[DataProblem]]:
    """The start-of-run check of a source's cases, the validator's and training's (``data.check``): each
    case's problems. ``headers``: files exist, headers agree in shape, annotation fields, a video's box
    inside its header's frames; ``full``: also every voxel (finite, a tumour in the segmentation) and
    every frame of a video."""
    decode = decodes(check)
    return [case.check(decode, slice_axis) for case in cases]


def read_source(
    source: BratsSource, path: Path, slice_axis: int = 2, check: Check = "headers"
) -> Checked[BratsCase]:
    """The cases of a source with each case's problems at the level ``check`` (:func:`check_cases`).
    A DataError when the source itself is unusable or has no case."""
    cases = [BratsCase(str(source.name), case) for case in find_cases(source, path)]
    if not cases:
        raise DataError.one(path, "-", "cases", f"no {source.kind} cases found")
    return Checked(path, cases, check_cases(cases, check, slice_axis))


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
    if kind == "brats" and path.is_dir() and not is_case_folder(path):
        paths += [
            ("msd", p)
            for p in sorted(path.iterdir())
            if p.is_dir() and not p.name.startswith(".") and is_msd(p)
        ]
    problems: list[DataProblem] = []
    total = 0
    for kind, where in paths:
        try:
            cases = [BratsCase("", case) for case in find_cases(BratsSource(kind, str(where)), where)]
        except DataError as error:
            problems += error.problems
            continue
        total += len(cases)
        problems += [p for found in check_cases(cases, level_of(decode)) for p in found]
    if total == 0 and not problems:
        problems.append(DataProblem(str(path), "-", "cases", "no cases found"))
    return problems
