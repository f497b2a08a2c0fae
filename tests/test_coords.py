"""Tests for vlmlab.tasks.coords: hand-checked numbers, round trips for every layout, and the pixels agree."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmlab.data.volume import VolumeFrames, VolumeWindow
from vlmlab.tasks.coords import (
    FrameGeometry,
    frame_box_to_voxel,
    frame_to_slice,
    frame_to_temporal_patch,
    layout_frames,
    nearest_frame,
    outer_int_box,
    sampled_frame_positions,
    slice_to_frame,
    slice_to_temporal_patch,
    split_frames,
    stack_axes,
    volume_to_stack,
    voxel_box_to_frame,
)

# The BraTS recipe's videos: 182 x 218 x 155 (x, y, z) -> 224 x 196 (w x h); here 31 frames, 4 modalities 2x2.
SEED = {"volume_shape": (155, 218, 182), "num_frames": 31, "size": (196, 224), "num_modalities": 4}


def tiled(method: str) -> FrameGeometry:
    return FrameGeometry(**SEED, temporal_method=method, layout="tiled")


# ---------------------------------------------------------------- hand-checked


def test_hand_case_linear_tiled_2x2_odd_frames() -> None:
    g = tiled("linear")
    # 2x2 grid of 196 x 224 tiles -> frames 392 high, 448 wide; 31 frames -> ceil(31 / 2) = 16 patches.
    assert g.grid == (2, 2) and g.frame_shape == (392, 448)
    assert g.frames_per_modality == 31 and g.total_frames == 31 and g.num_temporal_patches == 16
    assert g.voxel_shape == (182, 218, 155)
    box = [91, 109, 50, 130, 218, 100]
    # x: 91 * 224/182 = 112, 130 * 224/182 = 160 (130/182 = 5/7); y: 109 * 196/218 = 98, 218 -> 196;
    # z (linear, 155 -> 31): edges scale by 31/155 = 1/5: 50 -> 10, 100 -> 20.
    assert voxel_box_to_frame(box, g) == pytest.approx([112, 98, 10, 160, 196, 20])
    # Modality 3 sits at row 1, column 1: x + 224, y + 196, same frames.
    assert voxel_box_to_frame(box, g, modality=3) == pytest.approx([336, 294, 10, 384, 392, 20])
    assert voxel_box_to_frame(box, g, modality=1) == pytest.approx([336, 98, 10, 384, 196, 20])
    # Slice 72 (centre 72.5) -> 72.5 / 5 - 0.5 = 14.0; slice 150 -> 150.5 / 5 - 0.5 = 29.6 -> frame 30,
    # temporal patch 30 // 2 = 15: the last patch, which Qwen pads by repeating frame 30.
    assert slice_to_frame(72, g) == pytest.approx(14.0)
    assert nearest_frame(150, g) == 30 and slice_to_temporal_patch(150, g) == 15
    assert frame_to_slice(14.0, g) == pytest.approx(72.0)
    # Pixel centres: x = 90 (centre 90.5) -> (90 + 0.5) * 224/182 - 0.5 = 110.88461538...
    centre = voxel_box_to_frame([90, 0, 0, 91, 1, 1], g)
    assert (centre[0] + centre[3]) / 2 - 0.5 == pytest.approx((90 + 0.5) * 224 / 182 - 0.5)


def test_hand_case_sample_method() -> None:
    g = tiled("sample")
    # round(linspace(0, 154, 31)) = round(f * 5.1333): f=9 -> 46, 10 -> 51, 14 -> 72, 19 -> 98, 20 -> 103,
    # 29 -> 149, 30 -> 154. Knots map slice edge p + 0.5 to frame edge f + 0.5.
    positions = sampled_frame_positions(155, 31, "sample")
    assert [positions[f] for f in (9, 10, 14, 19, 20, 29, 30)] == [46, 51, 72, 98, 103, 149, 154]
    box = voxel_box_to_frame([91, 109, 50, 130, 218, 100], g)
    # z1: 50 lies between knots 46.5 (-> 9.5) and 51.5 (-> 10.5): 9.5 + 3.5/5 = 10.2
    # z2: 100 lies between 98.5 (-> 19.5) and 103.5 (-> 20.5): 19.5 + 1.5/5 = 19.8
    assert box == pytest.approx([112, 98, 10.2, 160, 196, 19.8])
    assert outer_int_box(box) == [112, 98, 10, 160, 196, 20]
    assert slice_to_frame(72, g) == pytest.approx(14.0)  # a kept slice lands exactly on its frame
    # slice 150 (edge centre 150.5): 29.5 + (150.5 - 149.5) / 5 = 29.7 -> frame 29.2 -> 29, patch 14
    assert slice_to_frame(150, g) == pytest.approx(29.2)
    assert nearest_frame(150, g) == 29 and slice_to_temporal_patch(150, g) == 14


def test_sequence_layout_odd_frames_share_a_temporal_patch() -> None:
    g = FrameGeometry(**SEED, layout="sequence")
    assert g.grid is None and g.frame_shape == (196, 224) and g.total_frames == 124
    assert g.num_temporal_patches == 62
    # Modality 1's frames start at 31: its first slice is frame 31, in patch 15 with modality 0's frame 30.
    assert g.offsets(1) == (0.0, 0.0, 31.0)
    assert nearest_frame(0, g, modality=1) == 31
    assert slice_to_temporal_patch(0, g, modality=1) == 15 == slice_to_temporal_patch(154, g, modality=0)
    assert voxel_box_to_frame([91, 109, 50, 130, 218, 100], g, modality=2) == pytest.approx(
        [112, 98, 72, 160, 196, 82]
    )
    assert frame_to_slice(31 + 14, g, modality=1) == pytest.approx(72.0)
    with pytest.raises(ValueError, match="outside"):
        frame_to_temporal_patch(124, g)


def test_no_resampling_is_identity() -> None:
    g = FrameGeometry((12, 10, 8))
    box = [1, 2, 3, 5, 7, 11]
    assert voxel_box_to_frame(box, g) == box
    assert slice_to_frame(7, g) == 7.0 and nearest_frame(7, g) == 7
    # Fewer slices than num_frames: never upsampled, still the identity.
    assert voxel_box_to_frame(box, FrameGeometry((12, 10, 8), num_frames=32)) == box


@pytest.mark.parametrize(
    ("axis", "expected"),
    [(2, (2, 1, 0)), (1, (1, 2, 0)), (0, (0, 2, 1))],
    ids=["axial", "coronal", "sagittal"],
)
def test_stack_axes_and_volume_to_stack(axis: int, expected: tuple[int, int, int]) -> None:
    assert stack_axes(axis) == expected
    x, y, z = 3, 4, 5
    volume = np.zeros((x, y, z))
    volume[1, 2, 3] = 1.0
    stack = volume_to_stack(volume, axis)
    position = {0: 1, 1: 2, 2: 3}
    d, r, c = expected
    assert stack.shape == tuple((x, y, z)[a] for a in expected)
    assert stack[position[d], position[r], position[c]] == 1.0
    # The voxel box of that voxel maps to frame column = the column axis, row = the row axis.
    g = FrameGeometry(stack.shape, slice_axis=axis)
    box = voxel_box_to_frame([1, 2, 3, 2, 3, 4], g)
    assert box == [position[c], position[r], position[d], position[c] + 1, position[r] + 1, position[d] + 1]
    assert g.voxel_shape == (x, y, z)


# ---------------------------------------------------------------- round trips


LAYOUTS = [
    {"layout": "sequence", "num_modalities": 1},
    {"layout": "sequence", "num_modalities": 4},
    {"layout": "tiled", "num_modalities": 4},
    {"layout": "tiled", "num_modalities": 3, "grid": (1, 3)},
    {"layout": "tiled", "num_modalities": 5},
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: f"{d['layout']}{d['num_modalities']}")
@pytest.mark.parametrize("method", ["sample", "linear"])
@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize(
    ("shape", "frames", "size"), [((155, 218, 182), 31, (196, 224)), ((40, 56, 48), 32, None)]
)
def test_round_trip_every_layout(
    layout: dict, method: str, slice_axis: int, shape: tuple, frames: int, size: tuple | None
) -> None:
    g = FrameGeometry(
        shape, slice_axis=slice_axis, num_frames=frames, temporal_method=method, size=size, **layout
    )
    rng = np.random.default_rng(slice_axis)
    limits = g.voxel_shape
    for _ in range(20):
        lo = [int(rng.integers(0, n - 1)) for n in limits]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, limits, strict=True)]
        box = lo + hi
        for m in range(g.num_modalities):
            frame = voxel_box_to_frame(box, g, modality=m)
            back = frame_box_to_voxel(frame, g, modality=m)
            assert back == pytest.approx(box, abs=1e-9)
            assert [round(v) for v in back] == box  # within one voxel: exactly the voxel box
            h, w = g.frame_shape
            assert 0 <= frame[0] < frame[3] <= w and 0 <= frame[1] < frame[4] <= h
            assert 0 <= frame[2] < frame[5] <= g.total_frames
        z = float(rng.integers(0, g.volume_shape[0]))
        assert frame_to_slice(
            slice_to_frame(z, g, 1 % g.num_modalities), g, 1 % g.num_modalities
        ) == pytest.approx(z)


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 200),
    frames=st.one_of(st.none(), st.integers(1, 64)),
    method=st.sampled_from(["sample", "linear"]),
    z=st.floats(-5, 205, allow_nan=False),
)
def test_slice_frame_maps_are_inverse_and_monotone(
    depth: int, frames: int | None, method: str, z: float
) -> None:
    g = FrameGeometry((depth, 8, 8), num_frames=frames, temporal_method=method)
    f = slice_to_frame(z, g)
    assert frame_to_slice(f, g) == pytest.approx(z, abs=1e-9)
    assert slice_to_frame(z + 0.25, g) > f
    # The volume's edges map onto the sequence's edges.
    assert g.slice_edge_to_frame_edge(0) == 0 and g.slice_edge_to_frame_edge(depth) == pytest.approx(
        g.frames_per_modality
    )


def test_sample_maps_kept_slices_exactly() -> None:
    for depth, n in ((155, 31), (40, 32), (97, 10), (12, 11)):
        g = FrameGeometry((depth, 4, 4), num_frames=n, temporal_method="sample")
        for f, p in enumerate(sampled_frame_positions(depth, n, "sample")):
            assert slice_to_frame(p, g) == pytest.approx(f) and nearest_frame(p, g) == f


# ---------------------------------------------------------------- the pixels agree with the map


@pytest.mark.parametrize("layout", ["sequence", "tiled"])
def test_rendered_frames_match_the_map(layout: str) -> None:
    """Render a bright block through VolumeFrames and the layout: it sits where voxel_box_to_frame says."""
    d, h, w = 20, 10, 12
    box = [3, 2, 6, 8, 5, 11]  # x 3..7, y 2..4, z 6..10
    stacks = []
    for m in range(2):
        volume = np.zeros((w, h, d), dtype=np.float32)  # NIfTI (X, Y, Z)
        volume[3:8, 2:5, 6:11] = 100.0 + m  # a different value per modality, all above the window
        stacks.append(volume_to_stack(volume, 2))
    frames_cfg = VolumeFrames(
        num_frames=10, temporal_method="sample", size=(20, 24), window=VolumeWindow("fixed", 0, 100)
    )
    g = FrameGeometry(
        (d, h, w), num_frames=10, temporal_method="sample", size=(20, 24), num_modalities=2, layout=layout
    )
    video = layout_frames([frames_cfg(s) for s in stacks], g)
    assert video.shape == (g.total_frames, *g.frame_shape, 3)
    for m in range(2):
        fb = voxel_box_to_frame(box, g, modality=m)
        grey = video[..., 0].astype(np.float64)
        # Frames: "sample" keeps slices round(linspace(0, 19, 10)) = 0,2,4,6,8,11,13,15,17,19: frames 3, 4
        # (slices 6, 8) show the block (z 6..10); the map gives z edges inside [3, 5).
        lit = np.flatnonzero(grey.reshape(len(grey), -1).max(axis=1) > 0)
        offset = int(g.offsets(m)[2])
        lit = lit[(lit >= offset) & (lit < offset + g.frames_per_modality)]
        assert list(lit) == [offset + 3, offset + 4]
        zi = outer_int_box(fb)
        assert zi[2] <= offset + 3 and zi[5] >= offset + 5
        # In-plane: the intensity centroid (pixel centres at j + 0.5) is the mapped box centre.
        tile = grey[offset + 3]
        x0, y0, _ = (int(v) for v in g.offsets(m))
        tile = tile[y0 : y0 + 20, x0 : x0 + 24]
        ys, xs = np.mgrid[:20, :24] + 0.5
        cx, cy = (tile * xs).sum() / tile.sum(), (tile * ys).sum() / tile.sum()
        assert cx + x0 == pytest.approx((fb[0] + fb[3]) / 2, abs=0.15)
        assert cy + y0 == pytest.approx((fb[1] + fb[4]) / 2, abs=0.15)
    # split_frames inverts layout_frames.
    parts = split_frames(video, g)
    assert len(parts) == 2 and all(p.shape == (10, 20, 24, 3) for p in parts)
    assert np.array_equal(layout_frames(parts, g), video)


# ---------------------------------------------------------------- serialisation and checks


def test_to_dict_from_dict_json_round_trip() -> None:
    g = tiled("sample")
    data = g.to_dict()
    assert data == {
        "volume_shape": [155, 218, 182],
        "slice_axis": 2,
        "num_frames": 31,
        "temporal_method": "sample",
        "size": [196, 224],
        "num_modalities": 4,
        "layout": "tiled",
        "grid": [2, 2],
        "temporal_patch_size": 2,
    }
    again = FrameGeometry.from_dict(json.loads(json.dumps(data)))
    assert again == g and hash(again) == hash(g)
    assert voxel_box_to_frame([1, 2, 3, 4, 5, 6], again) == voxel_box_to_frame([1, 2, 3, 4, 5, 6], g)
    with pytest.raises(ValueError, match="unknown FrameGeometry key"):
        FrameGeometry.from_dict({**data, "zoom": 2})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volume_shape": (0, 2, 2)}, "volume_shape"),
        ({"volume_shape": (2, 2, 2), "slice_axis": 3}, "slice_axis"),
        ({"volume_shape": (2, 2, 2), "temporal_method": "cubic"}, "temporal_method"),
        ({"volume_shape": (2, 2, 2), "layout": "mosaic"}, "layout"),
        ({"volume_shape": (2, 2, 2), "layout": "tiled", "num_modalities": 5, "grid": (2, 2)}, "fewer tiles"),
        ({"volume_shape": (2, 2, 2), "size": (0, 4)}, "size"),
    ],
)
def test_bad_geometry(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FrameGeometry(**kwargs)


def test_outer_int_box_and_default_grid() -> None:
    assert outer_int_box([1.2, 2.0000000001, 3.0, 4.5, 5.9999999999, 7.1]) == [1, 2, 3, 5, 6, 8]
    assert FrameGeometry((4, 4, 4), num_modalities=3, layout="tiled").grid == (2, 2)
    assert FrameGeometry((4, 4, 4), num_modalities=5, layout="tiled").grid == (2, 3)
    assert FrameGeometry((4, 4, 4), num_modalities=2, layout="tiled").frame_shape == (4, 8)
    assert math.isclose(FrameGeometry((4, 4, 4), grid=(9, 9)).frame_shape[0], 4)  # ignored for sequence
