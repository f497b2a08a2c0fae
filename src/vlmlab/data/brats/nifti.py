"""NIfTI cases: reading headers and voxels, and checking a case's files agree.

A :class:`NiftiCase` is one BraTS case folder or one MSD image (:mod:`.folders` finds them): per
modality a file and a channel (None: a 3-D file), and the segmentation. A case without tumour voxels
is rejected (``seg: no tumour voxels``): the answer format has no way to say "no tumour"
(``bbox_3d`` is a box), so such cases would teach nothing consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlmlab.data.brats.render import BratsRender, make_sample
from vlmlab.data.brats.truth import TumourTruth, tumour_truth
from vlmlab.data.errors import DataError, DataProblem, RowProblems
from vlmlab.data.sample import Sample
from vlmlab.tasks.coords import volume_to_stack

__all__ = ["NIFTI_SUFFIXES", "NiftiCase", "is_nifti", "nifti_shape"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NiftiKind = Literal["brats", "msd"]


def is_nifti(path: Path) -> bool:
    """A NIfTI file, not a hidden one (archives' ``._BRATS_001.nii.gz`` resource forks are not cases)."""
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def _nifti_image(path: Path) -> Any:
    import nibabel as nib  # lazy: keeps `import vlmlab.data.brats` light

    return nib.load(str(path))


def nifti_shape(path: Path) -> tuple[int, ...]:
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
    kind: NiftiKind
    modalities: tuple[str, ...]
    files: tuple[Path | None, ...]
    where: tuple[str, ...]
    channels: tuple[int | None, ...]
    seg: Path | None
    seg_where: str
    found: tuple[DataProblem, ...] = ()  # problems met while discovering the case

    def check(self, decode: bool = False, slice_axis: int = 2) -> list[DataProblem]:
        """Files exist and agree in shape (headers); with ``decode`` also finite voxels and a tumour."""
        problems = RowProblems(self.index)
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
    def _header(path: Path, field: str, problems: RowProblems) -> tuple[int, ...] | None:
        try:
            return nifti_shape(path)
        except FileNotFoundError:
            problems.add(path, field, "file not found")
        except Exception as error:
            problems.add(path, field, f"unreadable NIfTI file ({type(error).__name__}: {error})")
        return None

    def load(self, slice_axis: int = 2) -> tuple[list[np.ndarray], TumourTruth]:
        """Every modality ``(X, Y, Z)`` float32 and the ground truth; DataError naming file and field."""
        problems = RowProblems(self.index)
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
