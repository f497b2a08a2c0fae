"""Finding the NIfTI cases of a BraTS dataset folder and of an MSD Task01 folder.

``brats``
    A folder of BraTS case folders (or one case folder) ``BraTS-GLI-00000-000/`` holding one NIfTI file
    per modality, ``*-t1c.nii.gz, *-t1n.nii.gz, *-t2f.nii.gz, *-t2w.nii.gz`` (``-`` or ``_`` before the
    name; ``.nii`` too), and the segmentation ``*-seg.nii.gz``. Every non-hidden subfolder is a case,
    except MSD datasets (folders holding ``imagesTr/``), which belong to an ``msd`` source.
``msd``
    A Medical Segmentation Decathlon Task01 folder: ``imagesTr/BRATS_001.nii.gz`` 4-D ``(X, Y, Z, 4)``
    with channels FLAIR, T1w, t1gd, T2w (names from ``dataset.json`` when present) and
    ``labelsTr/BRATS_001.nii.gz``; a 3-D image is a single-modality volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vlmlab.data.brats.nifti import NIFTI_SUFFIXES, NiftiCase, is_nifti, nifti_shape
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.files import read_json

__all__ = [
    "BRATS_MODALITIES",
    "MSD_MODALITIES",
    "find_brats_cases",
    "find_msd_cases",
    "is_case_folder",
    "is_msd",
]

BRATS_MODALITIES = ("t1c", "t1n", "t2f", "t2w")  # the BraTS recipe's order: T1C, T1N, T2F, T2W
MSD_MODALITIES = ("FLAIR", "T1w", "t1gd", "T2w")  # MSD Task01 channel order (dataset.json "modality")


def _match(folder: Path, suffix: str) -> list[Path]:
    """Files of ``folder`` named ``*-{suffix}.nii[.gz]`` or ``*_{suffix}.nii[.gz]`` (case-insensitive)."""
    wanted = tuple(f"{sep}{suffix.lower()}{ext}" for sep in "-_" for ext in NIFTI_SUFFIXES)
    return sorted(p for p in folder.iterdir() if is_nifti(p) and p.name.lower().endswith(wanted))


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


def is_msd(folder: Path) -> bool:
    return (folder / "imagesTr").is_dir()


def is_case_folder(folder: Path) -> bool:
    return folder.is_dir() and any(is_nifti(p) for p in folder.iterdir())


def find_brats_cases(path: Path, modalities: Sequence[str] | None = None) -> list[NiftiCase]:
    """The cases of a BraTS dataset folder (every non-hidden, non-MSD subfolder) or of one case folder."""
    names = tuple(modalities or BRATS_MODALITIES)
    if not path.is_dir():
        raise DataError.one(path, "-", "path", "BraTS folder not found")
    if is_case_folder(path):
        return [_brats_case(path, 0, names)]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and not is_msd(p))
    return [_brats_case(folder, i, names) for i, folder in enumerate(folders)]


def _msd_names(path: Path) -> tuple[str, ...] | None:
    """Channel names from an MSD ``dataset.json`` (``"modality": {"0": "FLAIR", ...}``), if any."""
    meta = path / "dataset.json"
    if not meta.is_file():
        return None
    data = read_json(meta, what="an MSD dataset.json object")
    if not isinstance(data, dict):
        raise DataError.one(meta, "-", "json", f"expected an object, got {type(data).__name__}")
    modality = data.get("modality")
    if not isinstance(modality, dict):
        return None
    if not all(isinstance(k, str) and k.isdigit() for k in modality):
        raise DataError.one(meta, "-", "modality", f"expected channel numbers as keys, got {list(modality)}")
    return tuple(str(modality[k]) for k in sorted(modality, key=int))


def find_msd_cases(path: Path, modalities: Sequence[str] | None = None) -> list[NiftiCase]:
    """The cases of an MSD Task01 folder: ``imagesTr/*.nii.gz`` with ``labelsTr/`` of the same name."""
    images_dir, labels_dir = path / "imagesTr", path / "labelsTr"
    if not images_dir.is_dir():
        raise DataError.one(images_dir, "-", "imagesTr", "MSD images folder not found")
    names = _msd_names(path)
    cases = []
    for index, image in enumerate(sorted(p for p in images_dir.iterdir() if is_nifti(p))):
        found = []
        label = labels_dir / image.name
        if not label.is_file():
            found.append(DataProblem(str(label), index, "seg", "label file not found"))
        try:
            shape = nifti_shape(image)
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
