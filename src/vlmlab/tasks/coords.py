"""The one mapping between volume voxel coordinates and the coordinates of the frames the model sees.

The BraTS research code this project replaces trained on boxes in NIfTI voxel coordinates while the
model saw resized video frames (a coordinate bug it patched afterwards with a one-off script). Here
every box and slice index is kept in voxels in the data and mapped through :class:`FrameGeometry`,
which describes the whole frame pipeline, by the functions below, and back by their inverses.

Conventions (continuous coordinates, the same on both sides):

* Voxel and pixel EDGES. Voxel ``i`` along an axis covers ``[i, i + 1)``; its centre is ``i + 0.5``.
  A box ``[x1, y1, z1, x2, y2, z2]`` is in edge coordinates, upper bounds exclusive: the tumour
  voxels ``x = 3..7`` give ``x1 = 3, x2 = 8``. Frame boxes use the same convention in frame pixels
  (x, y) and frame indices (z): frame ``f`` covers ``[f, f + 1)``.
* Voxel boxes are in NIfTI array order (x, y, z) = axes (0, 1, 2) of the array nibabel returns.
  The slice axis ``s`` (2 = axial for BraTS) becomes time; the other two form the frame: its
  columns are the lower remaining axis and its rows the higher one (for ``s = 2``: rows = y,
  columns = x, i.e. the ``[Z, Y, X]`` stack of :func:`vlmlab.data.volume.load_volume`).
  Frame boxes are ``[column, row, frame]`` = ``[x, y, z]`` whatever the slice axis.
* Spatial resize ``W -> w`` maps pixel centres as ``x_frame = (x + 0.5) * w / W - 0.5`` (PyTorch's
  ``align_corners=False``), which in edge coordinates is the plain scaling ``X * w / W``.
* Temporal resampling ``D -> F`` frames (:func:`sampled_frame_positions`): frame
  ``f`` shows slice position ``p[f]`` (fractional for "linear"). Edges map piecewise-linearly through
  the knots ``(0 -> 0), (p[f] + 0.5 -> f + 0.5), (D -> F)``; for "linear" (and for no resampling)
  the knots are collinear and the map is the scaling ``Z * F / D``; for "sample" the map sends each
  sampled slice exactly onto its frame. Beyond the ends the first/last segment is extended, so the
  map is a bijection of the real line (nothing is clamped; validation rejects boxes outside).
* Modality layout: ``sequence`` puts modality ``m``'s ``F`` frames at frame indices
  ``[m F, (m + 1) F)``; ``tiled`` puts all modalities in one frame on a ``rows x cols`` grid,
  modality ``m`` at row ``m // cols``, column ``m % cols``: x offset ``col * w``, y offset ``row * h``.
  Boxes and slices are reported for modality 0 (the first frame run / top-left tile) unless asked.
* The model merges ``temporal_patch_size`` consecutive frames (2 for Qwen-VL) into one temporal patch
  (an odd total is padded by repeating the last frame): frame ``f`` is seen at temporal position
  ``f // 2``. With an odd ``F`` in the ``sequence`` layout two modalities share a temporal patch;
  prefer an even ``F``.

The processor may resize frames again (its pixel budget, multiples of patch x merge); the data source
sizes frames with the model's :class:`vlmlab.models.facts.VisionGeometry` so that the frames the
processor sees are exactly the frames described here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "TEMPORAL_METHODS",
    "FrameGeometry",
    "Layout",
    "frame_box_to_voxel",
    "frame_to_slice",
    "frame_to_temporal_patch",
    "layout_frames",
    "nearest_frame",
    "outer_int_box",
    "sample_slice_indices",
    "sampled_frame_positions",
    "slice_to_frame",
    "slice_to_temporal_patch",
    "split_frames",
    "stack_axes",
    "volume_to_stack",
    "voxel_box_to_frame",
]

Layout = Literal["sequence", "tiled"]
_LAYOUTS = ("sequence", "tiled")
TemporalMethod = Literal["sample", "linear"]
TEMPORAL_METHODS = ("sample", "linear")


def sample_slice_indices(num_slices: int, num_frames: int) -> torch.Tensor:
    """The slices "sample" resampling keeps: ``round(linspace(0, D - 1, F))`` as int64 ``[F]``.

    Computed in torch float32, as the original report pipeline did, so that rounding ties match it.
    """
    return torch.linspace(0, num_slices - 1, num_frames).round().long()


def sampled_frame_positions(num_slices: int, num_frames: int, method: TemporalMethod) -> np.ndarray:
    """Source slice index (possibly fractional) each output frame of temporal resampling shows.

    Returns float64 ``[F]``: ``arange(D)`` when ``num_slices <= num_frames`` (no resampling, never
    upsampled); "sample": :func:`sample_slice_indices`; "linear": ``(i + 0.5) * D / F - 0.5`` clamped
    to ``[0, D - 1]`` (PyTorch's ``align_corners=False`` source coordinate).
    """
    if method not in TEMPORAL_METHODS:
        raise ValueError(f"unknown temporal method {method!r}; expected 'sample' or 'linear'")
    if num_slices < 1 or num_frames < 1:
        raise ValueError(f"num_slices and num_frames must be >= 1, got {num_slices}, {num_frames}")
    if num_slices <= num_frames:
        return np.arange(num_slices, dtype=np.float64)
    if method == "sample":
        return sample_slice_indices(num_slices, num_frames).numpy().astype(np.float64)
    i = np.arange(num_frames, dtype=np.float64)
    return np.clip((i + 0.5) * num_slices / num_frames - 0.5, 0.0, num_slices - 1)


def stack_axes(slice_axis: int) -> tuple[int, int, int]:
    """The volume axes ``(slice, row, column)`` for a slice axis: the remaining higher axis gives rows.

    ``stack_axes(2) == (2, 1, 0)`` (axial: rows y, columns x), ``(1, 2, 0)``, ``(0, 2, 1)``.
    """
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2 (NIfTI x, y, z), got {slice_axis}")
    rest = [a for a in (0, 1, 2) if a != slice_axis]
    return slice_axis, rest[1], rest[0]


def volume_to_stack(volume: np.ndarray, slice_axis: int = 2) -> np.ndarray:
    """NIfTI-ordered volume ``(X, Y, Z)`` -> slice stack ``[D, H, W]`` (a transposed view, no copy)."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume (X, Y, Z), got shape {volume.shape}")
    return volume.transpose(stack_axes(slice_axis))


def _pair(value: Sequence[int] | None, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be two positive integers, got {list(value)}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class FrameGeometry:
    """How one case's volume became the frames the model sees; ``to_dict`` travels in ``Sample.target``.

    volume_shape: ``(D, H, W)`` slice stack of ONE modality before resampling (D slices along
        ``slice_axis``, H rows, W columns; see :func:`stack_axes`).
    slice_axis: the voxel-box axis (0 = x, 1 = y, 2 = z) that became time.
    num_frames / temporal_method: temporal resampling as in :class:`vlmlab.data.volume.VolumeFrames`
        (``None`` keeps every slice; never upsamples).
    size: ``(h, w)`` of one modality's frame after the spatial resize (``None``: ``(H, W)``).
    num_modalities / layout / grid: how modalities share the video; ``grid = (rows, cols)`` for
        ``tiled`` (default: ``cols = ceil(sqrt(M))``, ``rows = ceil(M / cols)``), ``None`` for ``sequence``.
    temporal_patch_size: frames per Qwen temporal patch (2 for Qwen2.5-VL and Qwen3-VL).
    """

    volume_shape: tuple[int, int, int]
    slice_axis: int = 2
    num_frames: int | None = None
    temporal_method: TemporalMethod = "linear"
    size: tuple[int, int] | None = None
    num_modalities: int = 1
    layout: Layout = "sequence"
    grid: tuple[int, int] | None = None
    temporal_patch_size: int = 2
    # Knots of the slice-edge -> frame-edge map (derived, not compared or serialised).
    _knots: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Lists arrive from Hydra and JSON: normalise to tuples so equal geometries compare equal.
        shape = tuple(int(v) for v in self.volume_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(
                f"volume_shape must be three positive integers (D, H, W), got {self.volume_shape}"
            )
        stack_axes(self.slice_axis)
        if self.num_frames is not None and int(self.num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1 or None, got {self.num_frames}")
        if self.temporal_method not in ("sample", "linear"):
            raise ValueError(f"temporal_method must be 'sample' or 'linear', got {self.temporal_method!r}")
        if self.layout not in _LAYOUTS:
            raise ValueError(f"layout must be 'sequence' or 'tiled', got {self.layout!r}")
        if int(self.num_modalities) < 1 or int(self.temporal_patch_size) < 1:
            raise ValueError("num_modalities and temporal_patch_size must be >= 1")
        grid = _pair(self.grid, "grid")
        if self.layout == "tiled":
            if grid is None:
                cols = math.ceil(math.sqrt(self.num_modalities))
                grid = (math.ceil(self.num_modalities / cols), cols)
            if grid[0] * grid[1] < self.num_modalities:
                raise ValueError(f"grid {list(grid)} has fewer tiles than {self.num_modalities} modalities")
        else:
            grid = None  # meaningless for a sequence: normalised so equal layouts compare equal
        set_ = object.__setattr__  # frozen dataclass: normalise once, here
        set_(self, "volume_shape", shape)
        set_(self, "slice_axis", int(self.slice_axis))
        set_(self, "num_frames", None if self.num_frames is None else int(self.num_frames))
        set_(self, "size", _pair(self.size, "size"))
        set_(self, "num_modalities", int(self.num_modalities))
        set_(self, "grid", grid)
        set_(self, "temporal_patch_size", int(self.temporal_patch_size))
        d = shape[0]
        positions = sampled_frame_positions(d, self.num_frames or d, self.temporal_method)
        f = len(positions)
        xs = np.concatenate([[0.0], positions + 0.5, [float(d)]])
        ys = np.concatenate([[0.0], np.arange(f) + 0.5, [float(f)]])
        if not np.all(np.diff(xs) > 0):  # sampled slices are distinct for D > F; guard the assumption
            raise ValueError(f"temporal resampling {d} -> {f} ({self.temporal_method}) repeats a slice")
        set_(self, "_knots", (xs, ys))

    # ------------------------------------------------------------------ derived sizes

    @property
    def frames_per_modality(self) -> int:
        """F: frames of one modality after temporal resampling (``min(D, num_frames)``)."""
        return len(self._knots[1]) - 2

    @property
    def tile_size(self) -> tuple[int, int]:
        """``(h, w)`` of one modality's frame (a tile when ``tiled``)."""
        return self.size if self.size is not None else (self.volume_shape[1], self.volume_shape[2])

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the frames handed to the processor."""
        h, w = self.tile_size
        if self.grid is None:
            return h, w
        return self.grid[0] * h, self.grid[1] * w

    @property
    def total_frames(self) -> int:
        """Frames in the video: ``M * F`` in ``sequence``, ``F`` in ``tiled``."""
        f = self.frames_per_modality
        return f * self.num_modalities if self.layout == "sequence" else f

    @property
    def num_temporal_patches(self) -> int:
        """Temporal positions the model sees: ``ceil(total_frames / temporal_patch_size)``."""
        return math.ceil(self.total_frames / self.temporal_patch_size)

    @property
    def voxel_shape(self) -> tuple[int, int, int]:
        """The NIfTI-ordered ``(X, Y, Z)`` shape the voxel boxes live in."""
        out = [0, 0, 0]
        for axis, n in zip(stack_axes(self.slice_axis), self.volume_shape, strict=True):
            out[axis] = n
        return tuple(out)  # type: ignore[return-value]

    def offsets(self, modality: int = 0) -> tuple[float, float, float]:
        """``(x, y, frame)`` offsets of modality ``modality`` in the model's frames."""
        if not 0 <= modality < self.num_modalities:
            raise ValueError(f"modality {modality} out of range for {self.num_modalities} modalities")
        if self.grid is None:
            return 0.0, 0.0, float(modality * self.frames_per_modality)
        h, w = self.tile_size
        row, col = divmod(modality, self.grid[1])
        return float(col * w), float(row * h), 0.0

    # ------------------------------------------------------------------ edge maps (one modality)

    def slice_edge_to_frame_edge(self, z: float) -> float:
        """Continuous slice EDGE coordinate -> frame edge coordinate (no modality offset)."""
        return _piecewise(z, *self._knots)

    def frame_edge_to_slice_edge(self, f: float) -> float:
        """Inverse of :meth:`slice_edge_to_frame_edge`."""
        xs, ys = self._knots
        return _piecewise(f, ys, xs)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, ints, strings); ``FrameGeometry.from_dict`` inverts it."""
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        for key in ("volume_shape", "size", "grid"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FrameGeometry:
        known = {k for k in cls.__dataclass_fields__ if not k.startswith("_")}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FrameGeometry key(s) {sorted(unknown)}; expected {sorted(known)}")
        if "volume_shape" not in data:
            raise ValueError("FrameGeometry needs volume_shape")
        return cls(**dict(data))


def _piecewise(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear map through strictly increasing knots, extending the end segments."""
    x = float(x)
    if x <= xs[0]:
        i = 0
    elif x >= xs[-1]:
        i = len(xs) - 2
    else:
        i = int(np.searchsorted(xs, x, side="right")) - 1
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return float(y0 + (x - x0) * (y1 - y0) / (x1 - x0))


def _box(box: Sequence[float], what: str) -> list[float]:
    values = [float(v) for v in box]
    if len(values) != 6:
        raise ValueError(f"{what} must be [x1, y1, z1, x2, y2, z2], got {list(box)}")
    return values


def voxel_box_to_frame(box: Sequence[float], geometry: FrameGeometry, modality: int = 0) -> list[float]:
    """Voxel box (x, y, z edges, NIfTI order) -> frame box ``[x1, y1, z1, x2, y2, z2]`` (floats).

    x, y: edge coordinates in pixels of the model's frames, inside modality ``modality``'s tile
    (``tiled``) or frame; z: frame-index edges of the sampled sequence, offset to the modality's run
    of frames (``sequence``). Exact: no rounding (see :func:`outer_int_box` for integer boxes).
    """
    b = _box(box, "voxel box")
    d_axis, r_axis, c_axis = stack_axes(geometry.slice_axis)
    _, height, width = geometry.volume_shape
    h, w = geometry.tile_size
    ox, oy, oz = geometry.offsets(modality)
    lo = [
        b[c_axis] * w / width + ox,
        b[r_axis] * h / height + oy,
        geometry.slice_edge_to_frame_edge(b[d_axis]) + oz,
    ]
    hi = [
        b[3 + c_axis] * w / width + ox,
        b[3 + r_axis] * h / height + oy,
        geometry.slice_edge_to_frame_edge(b[3 + d_axis]) + oz,
    ]
    return lo + hi


def frame_box_to_voxel(box: Sequence[float], geometry: FrameGeometry, modality: int = 0) -> list[float]:
    """Inverse of :func:`voxel_box_to_frame`: frame box of modality ``modality`` -> voxel box (floats)."""
    b = _box(box, "frame box")
    d_axis, r_axis, c_axis = stack_axes(geometry.slice_axis)
    _, height, width = geometry.volume_shape
    h, w = geometry.tile_size
    ox, oy, oz = geometry.offsets(modality)
    out = [0.0] * 6
    for k in (0, 3):
        out[k + c_axis] = (b[k] - ox) * width / w
        out[k + r_axis] = (b[k + 1] - oy) * height / h
        out[k + d_axis] = geometry.frame_edge_to_slice_edge(b[k + 2] - oz)
    return out


def slice_to_frame(z: float, geometry: FrameGeometry, modality: int = 0) -> float:
    """Slice INDEX (centre coordinates, fractional allowed) -> frame index (fractional).

    A slice the "sample" method kept maps exactly onto its frame; ``nearest_frame`` rounds.
    """
    return geometry.slice_edge_to_frame_edge(float(z) + 0.5) - 0.5 + geometry.offsets(modality)[2]


def frame_to_slice(f: float, geometry: FrameGeometry, modality: int = 0) -> float:
    """Frame index (of modality ``modality``) -> slice index (fractional); inverse of :func:`slice_to_frame`."""
    return geometry.frame_edge_to_slice_edge(float(f) - geometry.offsets(modality)[2] + 0.5) - 0.5


def nearest_frame(z: float, geometry: FrameGeometry, modality: int = 0) -> int:
    """The frame that shows slice ``z`` best: ``slice_to_frame`` rounded half up, within the modality's run."""
    f = math.floor(slice_to_frame(z, geometry, 0) + 0.5)
    f = min(max(f, 0), geometry.frames_per_modality - 1)
    return f + int(geometry.offsets(modality)[2])


def frame_to_temporal_patch(f: int, geometry: FrameGeometry) -> int:
    """Frame index in the video -> Qwen temporal patch index (``f // temporal_patch_size``)."""
    if not 0 <= f < geometry.total_frames:
        raise ValueError(f"frame {f} outside the video's {geometry.total_frames} frames")
    return int(f) // geometry.temporal_patch_size


def slice_to_temporal_patch(z: float, geometry: FrameGeometry, modality: int = 0) -> int:
    """Slice index -> the temporal patch (model time position) holding its nearest frame."""
    return frame_to_temporal_patch(nearest_frame(z, geometry, modality), geometry)


def outer_int_box(box: Sequence[float], eps: float = 1e-6) -> list[int]:
    """The smallest integer edge box containing ``box`` (floor the lower edges, ceil the upper ones).

    ``eps`` absorbs float noise so that an exact integer edge (e.g. 112.00000000000001) stays put.
    """
    b = _box(box, "box")
    return [math.floor(v + eps) for v in b[:3]] + [math.ceil(v - eps) for v in b[3:]]


def layout_frames(per_modality: Sequence[np.ndarray], geometry: FrameGeometry) -> np.ndarray:
    """Lay modalities out as the model's video: M arrays ``[F, h, w, ...]`` -> ``[T, H', W', ...]``.

    ``sequence``: concatenated in time (``T = M F``); ``tiled``: one frame holds every modality on the
    geometry's grid (``H' = rows h``, ``W' = cols w``; unused tiles are black). Exactly the placement
    :meth:`FrameGeometry.offsets` describes.
    """
    f, (h, w) = geometry.frames_per_modality, geometry.tile_size
    if len(per_modality) != geometry.num_modalities:
        raise ValueError(f"expected {geometry.num_modalities} modalities, got {len(per_modality)}")
    for frames in per_modality:
        if tuple(frames.shape[:3]) != (f, h, w):
            raise ValueError(f"each modality must be [F={f}, h={h}, w={w}, ...], got {tuple(frames.shape)}")
    if geometry.grid is None:
        return np.concatenate(list(per_modality), axis=0)
    height, width = geometry.frame_shape
    first = per_modality[0]
    out = np.zeros((f, height, width, *first.shape[3:]), dtype=first.dtype)
    for m, frames in enumerate(per_modality):
        x, y, _ = (int(v) for v in geometry.offsets(m))
        out[:, y : y + h, x : x + w] = frames
    return out


def split_frames(video: np.ndarray, geometry: FrameGeometry) -> list[np.ndarray]:
    """Inverse of :func:`layout_frames`: the video ``[T, H', W', ...]`` -> M arrays ``[F, h, w, ...]``."""
    expected = (geometry.total_frames, *geometry.frame_shape)
    if tuple(video.shape[:3]) != expected:
        raise ValueError(
            f"video of shape {tuple(video.shape)} does not match the geometry's [T, H, W] {expected}"
        )
    f, (h, w) = geometry.frames_per_modality, geometry.tile_size
    out = []
    for m in range(geometry.num_modalities):
        x, y, z = (int(v) for v in geometry.offsets(m))
        out.append(video[z : z + f, y : y + h, x : x + w])
    return out
