"""Synthetic report data: CT-like volumes with bright lesions and reports that describe them.

``python -m vlmlab.tools.synth ct_report OUT_DIR`` calls :func:`write`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Lesion", "describe_lesions", "write"]

CT_REPORT_PROMPT = "<video>\nGenerate a radiology report for this CT volume."

# Intensities on a [0, 255] HU-like scale: a window of "fixed" (0, 255) is the identity.
_TISSUE_MEAN, _TISSUE_STD = 40.0, 5.0
_LESION_MEAN, _LESION_STD = 220.0, 5.0
# In-plane radii (voxels); slices are "thicker" than pixels, so the z radius is one less (>= 2).
_SMALL_RADII = (2, 3)
_LARGE_RADII = (5, 6, 7)
_MAX_LESIONS = 3
_MIN_SIZE, _MIN_SLICES = 48, 16  # room for three large lesions in one half
_COUNT_WORDS = ("no", "one", "two", "three")


@dataclass(frozen=True)
class Lesion:
    """One ellipsoid lesion: centre (z, y, x) in voxels, in-plane radius ``r`` and z radius ``rz``.

    ``side`` is the patient's side in radiological convention: columns ``x < W/2`` are the
    patient's RIGHT (the image is viewed from the feet, patient's right on the viewer's left).
    """

    side: str  # "right" | "left"
    large: bool
    z: int
    y: int
    x: int
    r: int
    rz: int


def _plural(count: int, noun: str) -> str:
    return f"{_COUNT_WORDS[count]} {noun}{'' if count == 1 else 's'}"


def _describe_side(lesions: list[Lesion]) -> str:
    if not lesions:
        return "no lesion"
    parts = []
    for large, adjective in ((False, "small"), (True, "large")):  # fixed order: small first
        count = sum(lesion.large == large for lesion in lesions)
        if count:
            parts.append(_plural(count, f"{adjective} lesion"))
    return " and ".join(parts)


def describe_lesions(lesions: list[Lesion]) -> str:
    """The report for a set of lesions, in a small fixed vocabulary a tiny model can learn.

    e.g. ``"Findings: two lesions. Right: one large lesion. Left: one small lesion.
    Impression: multiple lesions."`` or ``"Findings: no lesion. Impression: normal study."``
    """
    if not lesions:
        return "Findings: no lesion. Impression: normal study."
    right = [lesion for lesion in lesions if lesion.side == "right"]
    left = [lesion for lesion in lesions if lesion.side == "left"]
    impression = "single lesion" if len(lesions) == 1 else "multiple lesions"
    return (
        f"Findings: {_plural(len(lesions), 'lesion')}. Right: {_describe_side(right)}. "
        f"Left: {_describe_side(left)}. Impression: {impression}."
    )


def _body_mask(size: int) -> np.ndarray:
    """[H, W] bool: an axial body ellipse, wider than deep, centred in the slice."""
    yy, xx = np.ogrid[:size, :size]
    c = (size - 1) / 2
    return ((yy - c) / (0.40 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 <= 1.0


def _try_place(
    rng: np.random.Generator, side: str, large: bool, placed: list[Lesion], body: np.ndarray, slices: int
) -> Lesion | None:
    """One random placement attempt; None if the lesion would leave the body/half or touch another."""
    size = body.shape[0]
    r = int(rng.choice(_LARGE_RADII if large else _SMALL_RADII))
    rz = max(2, r - 1)
    z = int(rng.integers(rz + 1, slices - rz - 1))  # one clear slice above and below
    y = int(rng.integers(r, size - r))
    half = size // 2
    # Right: x + r <= half - 2; left: x - r >= half + 1. A clear column on each side of the
    # midline, so no lesion straddles it (even for odd sizes).
    x = int(rng.integers(r, half - r - 1)) if side == "right" else int(rng.integers(half + r + 1, size - r))
    yy, xx = np.ogrid[y - r : y + r + 1, x - r : x + r + 1]
    disc = (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    if not body[y - r : y + r + 1, x - r : x + r + 1][disc].all():
        return None
    # Ellipsoids lie inside their radius-r spheres: spheres >= 2 voxels apart are never 26-connected.
    for other in placed:
        if np.sqrt((z - other.z) ** 2 + (y - other.y) ** 2 + (x - other.x) ** 2) < r + other.r + 2:
            return None
    return Lesion(side=side, large=large, z=z, y=y, x=x, r=r, rz=rz)


def _plan_lesions(rng: np.random.Generator, body: np.ndarray, slices: int) -> list[Lesion]:
    for _ in range(50):
        count = int(rng.integers(0, _MAX_LESIONS + 1))
        wanted = [(str(rng.choice(["right", "left"])), bool(rng.random() < 0.5)) for _ in range(count)]
        placed: list[Lesion] = []
        for side, large in wanted:
            for _ in range(200):
                lesion = _try_place(rng, side, large, placed, body, slices)
                if lesion is not None:
                    placed.append(lesion)
                    break
            else:
                break  # crowded: draw a new plan (still deterministic for the seed)
        if len(placed) == count:
            return placed
    raise RuntimeError("could not place lesions without overlap; use a larger --size or --slices")


def _draw_case(rng: np.random.Generator, body: np.ndarray, slices: int) -> tuple[np.ndarray, list[Lesion]]:
    """float32 [T, H, W] volume in [0, 255] and the lesions drawn in it."""
    size = body.shape[0]
    volume = rng.normal(_TISSUE_MEAN, _TISSUE_STD, size=(slices, size, size)).astype(np.float32)
    volume *= body  # zeros (air) outside the body
    lesions = _plan_lesions(rng, body, slices)
    for le in lesions:
        zz, yy, xx = np.ogrid[
            le.z - le.rz : le.z + le.rz + 1, le.y - le.r : le.y + le.r + 1, le.x - le.r : le.x + le.r + 1
        ]
        inside = ((zz - le.z) / le.rz) ** 2 + ((yy - le.y) / le.r) ** 2 + ((xx - le.x) / le.r) ** 2 <= 1.0
        box = volume[
            le.z - le.rz : le.z + le.rz + 1, le.y - le.r : le.y + le.r + 1, le.x - le.r : le.x + le.r + 1
        ]
        box[inside] = rng.normal(_LESION_MEAN, _LESION_STD, size=int(inside.sum()))
    np.clip(volume, 0.0, 255.0, out=volume)
    return volume, lesions


def write(
    out_dir: Path,
    num_train: int = 48,
    num_val: int = 8,
    num_test: int = 8,
    slices: int = 24,
    size: int = 64,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a synthetic CT report-generation set in the recipe's format; return the split files.

    Layout: ``out_dir/volumes/ct_report_NNN.npy`` (float32, values in [0, 255]; even cases
    ``[1, T, H, W]``, odd cases ``[T, H, W]`` to exercise both ranks) and
    ``out_dir/{train,val,test}.json``: lists of ``{"id", "messages", "videos"}`` records with
    video paths relative to the json file's folder. Each volume is a noisy body ellipse
    (~N(40, 5)) with 0-3 bright (~220) ellipsoid lesions, small (radius 2-3) or large (5-7),
    each entirely in the patient's right (``x < W/2``, radiological convention) or left half;
    the report (:func:`describe_lesions`) states exactly their count, sides and sizes.
    Deterministic for a seed.
    """
    if size < _MIN_SIZE or slices < _MIN_SLICES:
        raise ValueError(f"need size >= {_MIN_SIZE} and slices >= {_MIN_SLICES}, got {size}, {slices}")
    if min(num_train, num_val, num_test) < 0:
        raise ValueError("split sizes must be >= 0")
    out_dir = Path(out_dir)
    (out_dir / "volumes").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    body = _body_mask(size)
    total = num_train + num_val + num_test
    width = max(3, len(str(max(total - 1, 0))))
    splits = {"train": num_train, "val": num_val, "test": num_test}
    paths: dict[str, Path] = {}
    index = 0
    for split, count in splits.items():
        records = []
        for _ in range(count):
            case_id = f"ct_report_{index:0{width}d}"
            volume, lesions = _draw_case(rng, body, slices)
            rel = f"volumes/{case_id}.npy"
            np.save(out_dir / rel, volume[None] if index % 2 == 0 else volume)
            records.append(
                {
                    "id": case_id,
                    "messages": [
                        {"role": "user", "content": CT_REPORT_PROMPT},
                        {"role": "assistant", "content": describe_lesions(lesions)},
                    ],
                    "videos": [rel],
                }
            )
            index += 1
        paths[split] = out_dir / f"{split}.json"
        paths[split].write_text(json.dumps(records, indent=2) + "\n")
    return paths
