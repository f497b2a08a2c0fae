"""Synthetic BraTS / MSD Task01 cases: a brain-like ellipsoid with one bright ellipsoid tumour of known box.

``python -m vlmlab.tools.synth brats OUT_DIR`` calls :func:`write`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["MODALITY_CONTRAST", "MSD_DIR", "draw_case", "write"]

MSD_DIR = "MSD_Task01_BrainTumour"  # the MSD dataset folder written inside the val split

# (tissue mean, tumour mean) per BraTS modality, MRI-like integers; noise std 15. The tumour is brighter
# than tissue in T1C (enhancement), FLAIR (T2F) and T2W, darker in native T1 (T1N): a different
# contrast per modality, and visible in the pixels of three of them.
MODALITY_CONTRAST: dict[str, tuple[float, float]] = {
    "t1c": (400.0, 1000.0),
    "t1n": (500.0, 250.0),
    "t2f": (300.0, 900.0),
    "t2w": (350.0, 1100.0),
}
_NOISE = 15.0
# MSD channel order FLAIR, T1w, t1gd, T2w = BraTS t2f, t1n, t1c, t2w.
_MSD_CHANNELS = ("t2f", "t1n", "t1c", "t2w")
_MSD_NAMES = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
_MIN_SHAPE = 24
# A centre offset of at most this fraction of the room along every axis keeps the tumour inside the
# ellipsoidal brain even at a corner of the offset box.
_CORNER_SAFE_SPREAD = 1 / np.sqrt(3)


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """bool (X, Y, Z): voxel centres (index coordinates) inside the ellipsoid."""
    grids = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1.0


def draw_case(
    rng: np.random.Generator, shape: tuple[int, int, int], spread: float = _CORNER_SAFE_SPREAD
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One case: ({modality: int16 (X, Y, Z)}, seg uint8 (X, Y, Z), brain bool (X, Y, Z)).

    Brain: an ellipsoid with radii 0.42 of the volume, zero outside (skull-stripped MRI). Tumour: an
    ellipsoid with radii 10-20% of the volume (at least 2 voxels) lying wholly inside the brain; its
    inner half (radius ratio 0.5) is label 3 (enhancing), the rest label 2 (oedema), as in BraTS.
    spread: how far the tumour's centre may move from the brain's, as a fraction of the room it has
    along each axis; placements that leave the brain are drawn again. The default (1/sqrt(3)) never
    needs a second draw; 1.0 lets tumours reach the brain's edges, so a constant box scores lower.
    """
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread must be in [0, 1], got {spread}")
    dims = np.array(shape, dtype=np.float64)
    centre = (dims - 1) / 2
    brain = _ellipsoid(shape, centre, 0.42 * dims)
    for _ in range(1000):
        radii = np.maximum(2.0, rng.uniform(0.10, 0.20, size=3) * dims)
        tumour_centre = centre + rng.uniform(-1, 1, size=3) * spread * (0.42 * dims - radii - 1)
        tumour = _ellipsoid(shape, tumour_centre, radii)
        if tumour.any() and not (tumour & ~brain).any():
            break
    else:  # pragma: no cover - about one draw in three fits at spread 1
        raise RuntimeError("could not place a tumour inside the brain")
    core = _ellipsoid(shape, tumour_centre, 0.5 * radii) & tumour
    seg = np.zeros(shape, dtype=np.uint8)
    seg[tumour] = 2
    seg[core] = 3
    volumes = {}
    for name, (tissue, lesion) in MODALITY_CONTRAST.items():
        mean = np.where(tumour, lesion, tissue)
        noisy = np.clip(rng.normal(mean, _NOISE), 1.0, None)  # >= 1: a brain voxel is never exactly zero
        volumes[name] = np.where(brain, np.round(noisy), 0).astype(np.int16)
    return volumes, seg, brain


def _save(data: np.ndarray, path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def write(
    out_dir: Path,
    num_train: int = 24,
    num_val: int = 6,
    num_test: int = 6,
    shape: tuple[int, int, int] = (48, 56, 40),
    seed: int = 0,
    spread: float = _CORNER_SAFE_SPREAD,
) -> dict[str, Path]:
    """Write synthetic BraTS-layout case folders (and one MSD Task01 case); return the split folders.

    Layout: ``out_dir/{train,val,test}/BraTS-GLI-NNNNN-000/BraTS-GLI-NNNNN-000-{t1c,t1n,t2f,t2w,seg}.nii.gz``
    (int16 images, uint8 labels 0/2/3, ``shape`` = NIfTI (X, Y, Z), affine identity), and in the val split
    ``val/MSD_Task01_BrainTumour/{imagesTr,labelsTr}/BRATS_001.nii.gz`` (4-D float32 FLAIR, T1w, t1gd,
    T2w; labels 1 oedema / 3 enhancing) with its ``dataset.json``: one more case than ``num_val``.
    See :func:`draw_case` for the volumes and ``spread``. Deterministic for a seed.
    """
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < _MIN_SHAPE:
        raise ValueError(f"shape must be three sizes >= {_MIN_SHAPE} (X, Y, Z), got {shape}")
    if min(num_train, num_val, num_test) < 0:
        raise ValueError("split sizes must be >= 0")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {}
    index = 0
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        paths[split] = out_dir / split
        paths[split].mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            case_id = f"BraTS-GLI-{index:05d}-000"
            folder = paths[split] / case_id
            folder.mkdir(exist_ok=True)
            volumes, seg, _ = draw_case(rng, shape, spread)
            for name, volume in volumes.items():
                _save(volume, folder / f"{case_id}-{name}.nii.gz")
            _save(seg, folder / f"{case_id}-seg.nii.gz")
            index += 1
    msd = paths["val"] / MSD_DIR
    (msd / "imagesTr").mkdir(parents=True, exist_ok=True)
    (msd / "labelsTr").mkdir(parents=True, exist_ok=True)
    volumes, seg, _ = draw_case(rng, shape, spread)
    image = np.stack([volumes[name] for name in _MSD_CHANNELS], axis=-1).astype(np.float32)
    _save(image, msd / "imagesTr" / "BRATS_001.nii.gz")
    _save(np.where(seg == 2, 1, seg).astype(np.uint8), msd / "labelsTr" / "BRATS_001.nii.gz")
    meta = {
        "name": "BRATS",
        "modality": _MSD_NAMES,
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
    }
    (msd / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths
