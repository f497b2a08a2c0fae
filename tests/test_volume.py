"""Tests for vlmlab.data.volume: hand-computed values and parity with the report recipe's fetch_video."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlmlab.data.volume import (
    HU_WINDOWS,
    VolumeError,
    VolumeWindow,
    apply_window,
    load_volume,
    spatial_resize,
    temporal_resize,
    volume_to_frames,
)
from vlmlab.tasks.coords import sampled_frame_positions


def ramp_frames(t: int, c: int = 1, h: int = 2, w: int = 3) -> torch.Tensor:
    """[T, C, H, W] float where every voxel of slice i equals i."""
    return torch.arange(t, dtype=torch.float32).view(t, 1, 1, 1).expand(t, c, h, w).contiguous()


def slice_values(frames: torch.Tensor) -> list[float]:
    """The (constant) value of each frame of a ramp-derived tensor."""
    flat = frames.reshape(frames.shape[0], -1)
    assert torch.allclose(flat, flat[:, :1].expand_as(flat)), "frames are not constant"
    return flat[:, 0].tolist()


# ---------------------------------------------------------------- temporal_resize


@pytest.mark.parametrize(("t", "n", "expected"), [(10, 4, [0, 3, 6, 9]), (5, 3, [0, 2, 4])])
def test_temporal_sample_picks_linspace_slices(t: int, n: int, expected: list[int]) -> None:
    # linspace(0, 9, 4) = [0, 3, 6, 9]; linspace(0, 4, 3) = [0, 2, 4]: no rounding needed.
    out = temporal_resize(ramp_frames(t, c=3), n, "sample")
    assert out.shape == (n, 3, 2, 3)
    assert slice_values(out) == expected


def test_temporal_linear_hand_computed() -> None:
    # T=4 -> n=2, align_corners=False: scale = T/n = 2, src(i) = (i + 0.5) * 2 - 0.5
    # src(0) = 0.5 -> halfway between slices 0 and 1 = 0.5; src(1) = 2.5 -> between 2 and 3 = 2.5.
    out = temporal_resize(ramp_frames(4, c=2), 2, "linear")
    assert out.shape == (2, 2, 2, 3)
    assert slice_values(out) == pytest.approx([0.5, 2.5])


def test_temporal_linear_keeps_voxels_independent() -> None:
    # Each voxel is resampled along time on its own: a voxel-dependent offset survives unchanged.
    t, c, h, w = 6, 2, 3, 4
    offset = torch.arange(c * h * w, dtype=torch.float32).view(1, c, h, w) * 100
    out = temporal_resize(ramp_frames(t, c, h, w) + offset, 3, "linear")
    # scale 2: src = 0.5, 2.5, 4.5
    expected = torch.tensor([0.5, 2.5, 4.5]).view(3, 1, 1, 1) + offset
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("method", ["sample", "linear"])
def test_temporal_never_upsamples(method: str) -> None:
    frames = ramp_frames(3)
    out = temporal_resize(frames, 8, method)  # type: ignore[arg-type]
    assert out.shape[0] == 3
    assert torch.equal(out, frames)
    assert torch.equal(temporal_resize(frames, 3, method), frames)  # type: ignore[arg-type]


def test_temporal_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown temporal method"):
        temporal_resize(ramp_frames(10), 4, "nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown temporal method"):
        sampled_frame_positions(10, 4, "cubic")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["sample", "linear"])
@pytest.mark.parametrize(("t", "n"), [(10, 4), (5, 3), (4, 2), (40, 32), (33, 32), (100, 7), (7, 7), (3, 8)])
def test_sampled_frame_positions_match_temporal_resize(t: int, n: int, method: str) -> None:
    # On a ramp (value == slice index) each output frame's value IS the source position it represents.
    positions = sampled_frame_positions(t, n, method)  # type: ignore[arg-type]
    assert positions.dtype == np.float64
    assert positions.shape == (min(t, n),)
    values = slice_values(temporal_resize(ramp_frames(t), n, method))  # type: ignore[arg-type]
    np.testing.assert_allclose(positions, values, atol=1e-4)
    assert positions.min() >= 0 and positions.max() <= t - 1


def test_sampled_frame_positions_linear_formula() -> None:
    # T=10, n=4: scale 2.5, src = (i + 0.5) * 2.5 - 0.5 = 0.75, 3.25, 5.75, 8.25
    np.testing.assert_allclose(sampled_frame_positions(10, 4, "linear"), [0.75, 3.25, 5.75, 8.25])
    np.testing.assert_array_equal(sampled_frame_positions(3, 8, "linear"), [0, 1, 2])


# ---------------------------------------------------------------- spatial_resize


def test_spatial_resize_shape_and_range() -> None:
    gen = torch.Generator().manual_seed(0)
    # A hard 0/255 checkerboard makes bicubic overshoot: the clamp must catch it.
    frames = (torch.rand(5, 1, 32, 32, generator=gen) > 0.5).float() * 255
    raw = F.interpolate(frames, size=(20, 24), mode="bicubic", antialias=True, align_corners=False)
    assert raw.min() < 0 or raw.max() > 255  # the overshoot really happens
    out = spatial_resize(frames, (20, 24))
    assert out.shape == (5, 1, 20, 24)
    assert out.min() >= 0 and out.max() <= 255
    assert spatial_resize(frames, None) is frames
    assert torch.equal(spatial_resize(frames, (32, 32)), frames)


# ---------------------------------------------------------------- volume_to_frames


def test_volume_to_frames_dtype_shape_channels() -> None:
    rng = np.random.default_rng(0)
    volume = rng.uniform(-1000, 1000, size=(40, 30, 20)).astype(np.float32)
    frames = volume_to_frames(volume, num_frames=8, size=(16, 12), window=VolumeWindow.ct("soft_tissue"))
    assert frames.dtype == np.uint8
    assert frames.shape == (8, 16, 12, 3)
    assert np.array_equal(frames[..., 0], frames[..., 1])
    assert np.array_equal(frames[..., 0], frames[..., 2])


def test_volume_to_frames_accepts_rank4_and_keeps_all() -> None:
    rng = np.random.default_rng(1)
    volume = rng.uniform(0, 255, size=(6, 10, 10)).astype(np.float32)
    window = VolumeWindow("fixed", 0, 255)
    a = volume_to_frames(volume, num_frames=None, window=window)
    b = volume_to_frames(volume[None], num_frames=None, window=window)
    assert a.shape == (6, 10, 10, 3)
    assert np.array_equal(a, b)
    # No resizing and an identity window: just rounding.
    assert np.array_equal(a[..., 0], np.round(volume).astype(np.uint8))


def test_volume_to_frames_default_window_is_min_max() -> None:
    volume = ramp_frames(5, h=4, w=4)[:, 0].numpy() * 10 - 7  # slices -7, 3, 13, 23, 33
    frames = volume_to_frames(volume, num_frames=None)
    assert frames[0].max() == 0 and frames[-1].min() == 255


def test_volume_to_frames_rejects_bad_rank() -> None:
    with pytest.raises(VolumeError, match="expected a volume of shape"):
        volume_to_frames(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(VolumeError, match="expected a volume of shape"):
        volume_to_frames(np.zeros((4, 5), np.float32))


def seed_fetch_video(video: np.ndarray, target_t: int, size: tuple[int, int]) -> torch.Tensor:
    """The report recipe's fetch_video on an array, torchvision's resize replaced by the kernel it calls."""
    if video.ndim == 3:
        video = video[np.newaxis, ...]
    x = torch.tensor(video).float().permute(1, 0, 2, 3)  # [T, 1, H, W]
    x = x.expand(-1, 3, -1, -1)  # [T, 3, H, W]
    t, c, h, w = x.shape
    if t > target_t:  # seed temporal_resize, method="linear"
        x = x.permute(1, 2, 3, 0).contiguous().view(-1, 1, t)
        x = F.interpolate(x, size=target_t, mode="linear", align_corners=False)
        x = x.view(c, h, w, target_t).permute(3, 0, 1, 2).contiguous()
    return F.interpolate(x, size=list(size), mode="bicubic", antialias=True, align_corners=False).float()


def test_parity_with_seed_fetch_video() -> None:
    rng = np.random.default_rng(1234)
    volume = rng.uniform(0, 255, size=(1, 40, 64, 64)).astype(np.float32)
    seed = seed_fetch_video(volume, 32, (48, 48))
    seed_u8 = seed.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # [T, h, w, 3]
    # The seed does not normalise: "fixed" [0, 255] is the identity on this data.
    ours = volume_to_frames(volume, 32, "linear", (48, 48), VolumeWindow(kind="fixed", lo=0, hi=255))
    assert ours.shape == seed_u8.shape == (32, 48, 48, 3)
    assert np.abs(ours.astype(np.int16) - seed_u8.astype(np.int16)).max() <= 1


# ---------------------------------------------------------------- apply_window


def test_hu_window_brain() -> None:
    # brain (0, 80): clip then scale by 255/80.
    volume = np.array([[[-100.0, 0.0, 40.0, 80.0, 200.0]]], np.float32)
    out = apply_window(volume, VolumeWindow.ct("brain"))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 127.5, 255.0, 255.0])


def test_ct_presets() -> None:
    assert VolumeWindow.ct("lung") == VolumeWindow("hu", -1350, 150)
    assert set(HU_WINDOWS) == {"brain", "soft_tissue", "lung", "bone", "abdomen"}
    with pytest.raises(ValueError, match="brain"):
        VolumeWindow.ct("liver")


def test_window_validation() -> None:
    with pytest.raises(ValueError, match="lo < hi"):
        VolumeWindow("fixed", 10, 10)
    with pytest.raises(ValueError, match="percentile"):
        VolumeWindow("percentile", 1, 101)


def test_percentile_window_ignores_zero_background() -> None:
    # Non-zero voxels 1..100 (+ lots of zero background): percentiles (0, 100) -> (1, 100).
    volume = np.concatenate([np.zeros(500), np.arange(1, 101)]).astype(np.float32).reshape(1, 6, 100)
    out = apply_window(volume, VolumeWindow("percentile", 0, 100)).ravel()
    assert out[:500].max() == 0  # background below the low percentile clips to 0
    np.testing.assert_allclose(out[500], 0.0)
    np.testing.assert_allclose(out[-1], 255.0)
    np.testing.assert_allclose(out[500 + 50], (51 - 1) / 99 * 255, rtol=1e-5)
    # Inner percentiles clip: 1st/99th of 1..100 are 1.99 and 99.01.
    clipped = apply_window(volume, VolumeWindow("percentile", 1, 99)).ravel()
    assert clipped[500] == 0 and clipped[-1] == 255


@pytest.mark.parametrize("window", [VolumeWindow(), VolumeWindow("percentile", 1, 99)])
def test_constant_volume_gives_zeros(window: VolumeWindow) -> None:
    out = apply_window(np.full((3, 4, 5), 42.0, np.float32), window)
    assert out.shape == (3, 4, 5)
    assert not out.any()
    assert not apply_window(np.zeros((2, 2, 2), np.float32), window).any()


def test_min_max_window() -> None:
    out = apply_window(np.array([[[-10.0, 0.0, 10.0]]], np.float32), VolumeWindow())
    np.testing.assert_allclose(out.ravel(), [0.0, 127.5, 255.0])


# ---------------------------------------------------------------- load_volume


def test_load_volume_npy_both_ranks(tmp_path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", data[None])
    np.save(tmp_path / "b.npy", data)
    for name in ("a.npy", "b.npy"):
        volume = load_volume(tmp_path / name)
        assert volume.dtype == np.float32
        assert volume.shape == (2, 3, 4)
        np.testing.assert_array_equal(volume, data)
    assert load_volume(str(tmp_path / "a.npy")).shape == (2, 3, 4)


def test_load_volume_nifti_is_transposed(tmp_path) -> None:
    nib = pytest.importorskip("nibabel")
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (X, Y, Z)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    volume = load_volume(tmp_path / "v.nii.gz")
    assert volume.shape == (4, 3, 2)  # [Z, Y, X]
    np.testing.assert_array_equal(volume, data.transpose(2, 1, 0))


def test_load_volume_missing(tmp_path) -> None:
    path = tmp_path / "nope.npy"
    with pytest.raises(VolumeError, match="file not found") as info:
        load_volume(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 4), np.float32), "got shape (3, 4)"),
        (np.zeros((2, 3, 4, 5), np.float32), "leading dim must be 1"),
        (np.zeros((1, 0, 4, 5), np.float32), "empty dimension"),
        (np.array([[[0.0, np.nan]]], np.float32), "non-finite"),
        (np.array([[[0.0, np.inf]]], np.float32), "non-finite"),
    ],
)
def test_load_volume_invalid(tmp_path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(VolumeError) as info:
        load_volume(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    if "shape" in message:
        assert "expected a volume of shape [1,T,H,W] or [T,H,W]" in str(info.value)


def test_load_volume_unreadable(tmp_path) -> None:
    path = tmp_path / "corrupt.npy"
    path.write_bytes(b"this is not a numpy file")
    with pytest.raises(VolumeError, match="unreadable") as info:
        load_volume(path)
    assert str(path) in str(info.value)
    other = tmp_path / "volume.txt"
    other.write_text("1 2 3")
    with pytest.raises(VolumeError, match="unsupported file type"):
        load_volume(other)


def test_volume_error_is_value_error() -> None:
    assert issubclass(VolumeError, ValueError)
