"""Tests for the BraTS / MSD / video brain-tumour source, its synthetic writer and its datamodule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import ConcatDataset

from tests.helpers import CONF
from vlmlab.data.base import SampleDataset
from vlmlab.data.brats import (
    BratsDataModule,
    BratsRender,
    BratsSource,
    fit_render,
    read_source,
    tumour_truth,
    validate_file,
)
from vlmlab.data.collate import SFTCollator
from vlmlab.data.errors import DataError, OnBadSample, keep_good
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.brats import MSD_DIR, write
from vlmlab.data.volume import VolumeFrames, VolumeWindow
from vlmlab.tasks.coords import FrameGeometry, layout_frames, nearest_frame, outer_int_box, voxel_box_to_frame

MODS = ("t1c", "t1n", "t2f", "t2w")
ANSWER = re.compile(r"<think>(This video shows .+?)</think><answer>(\{.*\})</answer>", re.S)
SMALL = VolumeFrames(
    num_frames=4, temporal_method="sample", size=(28, 28), window=VolumeWindow("percentile", 0.5, 99.5)
)


def dataset(
    source: BratsSource, path: Path, render: BratsRender, on_bad_sample: OnBadSample = "raise"
) -> SampleDataset:
    """The cases of one source as the datamodule serves them: checked, filtered, decoded on access."""
    checked = read_source(source, path, render.slice_axis)
    return SampleDataset(keep_good(checked, on_bad_sample), lambda case: case.sample(render))


def save(data: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def hand_volumes() -> tuple[list[np.ndarray], np.ndarray]:
    """10x10x10: brain = the 8x8x8 cube [1, 9)^3 (non-zero in every modality), tumour = a 2x3x4 block
    at x 2..3, y 3..5, z 4..7 -> box [2, 3, 4, 4, 6, 8], ratio 24 / 512, every z slice 6 voxels (tie)."""
    volumes = []
    for k in range(4):
        v = np.zeros((10, 10, 10), dtype=np.float32)
        v[1:9, 1:9, 1:9] = 100 + 10 * k
        v[2:4, 3:6, 4:8] = 500
        volumes.append(v)
    seg = np.zeros((10, 10, 10), dtype=np.uint8)
    seg[2:4, 3:6, 4:8] = 2
    return volumes, seg


def brats_case(folder: Path, volumes: list[np.ndarray], seg: np.ndarray, skip: str | None = None) -> Path:
    for name, volume in zip(MODS, volumes, strict=True):
        if name != skip:
            save(volume, folder / f"{folder.name}-{name}.nii.gz")
    save(seg, folder / f"{folder.name}-seg.nii.gz")
    return folder


def answer_json(sample: Sample) -> dict:
    match = ANSWER.fullmatch(sample.answer)
    assert match, sample.answer
    return json.loads(match.group(2))


# ---------------------------------------------------------------- ground truth, hand-computed


def test_tumour_truth_hand_computed() -> None:
    volumes, seg = hand_volumes()
    truth = tumour_truth(seg, volumes)
    assert truth.bbox_3d == [2, 3, 4, 4, 6, 8]
    assert truth.peak_slice == 4  # every slice z = 4..7 holds 2 x 3 = 6 voxels: the lowest wins the tie
    assert truth.tumour_voxels == 24 and truth.brain_voxels == 512
    assert truth.tumor_ratio == 24 / 512
    # One more tumour voxel at z = 6 makes slice 6 the peak; along x (slice_axis 0) slice 2 and 3 tie.
    seg[3, 6, 6] = 1
    assert tumour_truth(seg, volumes).peak_slice == 6
    assert tumour_truth(seg, volumes).bbox_3d == [2, 3, 4, 4, 7, 8]
    assert tumour_truth(seg, volumes, slice_axis=0).peak_slice == 3  # x=3: 12 + 1 voxels
    assert tumour_truth(np.zeros_like(seg), volumes) is None
    # A tumour voxel outside every modality's non-zero region still counts as brain.
    seg[0, 0, 0] = 1
    assert tumour_truth(seg, volumes).tumor_ratio == 26 / 513


def test_nifti_case_sample_identity_geometry(tmp_path: Path) -> None:
    volumes, seg = hand_volumes()
    brats_case(tmp_path / "cases" / "BraTS-GLI-00001-000", volumes, seg)
    render = BratsRender(frames=VolumeFrames(num_frames=None, window=VolumeWindow("fixed", 0, 500)))
    ds = dataset(BratsSource("brats", "cases", name="hand"), tmp_path / "cases", render)
    sample = ds[0]
    assert sample.id == "hand/BraTS-GLI-00001-000"
    video = sample.messages[0]["content"][0]["video"]
    assert video.shape == (40, 10, 10, 3) and video.dtype == np.uint8  # 4 modalities x 10 slices [Z, Y, X]
    assert video[4, 3, 2, 0] == 255 and video[4, 3, 1, 0] == round(
        100 * 255 / 500
    )  # frame 4, row y=3, col x=2
    assert sample.target["bbox_3d_voxel"] == [2, 3, 4, 4, 6, 8]
    assert sample.target["bbox_3d"] == [2, 3, 4, 4, 6, 8]  # no resampling or resize: frames = voxels
    assert sample.target["peak_slice"] == sample.target["peak_slice_voxel"] == 4
    assert sample.target["tumor_ratio"] == 24 / 512
    assert answer_json(sample) == {
        "bbox_3d": [2, 3, 4, 4, 6, 8],
        "peak_slice": 4,
        "tumor_ratio": round(24 / 512, 4),
    }
    assert sample.messages[0]["content"][1]["text"].startswith(
        "This video shows a brain MRI scan: 4 MRI sequences"
    )


@pytest.mark.parametrize("layout", ["sequence", "tiled"])
def test_answer_box_is_the_mapped_voxel_box(tmp_path: Path, layout: str) -> None:
    volumes, seg = hand_volumes()
    brats_case(tmp_path / "BraTS-GLI-00002-000", volumes, seg)
    render = BratsRender(
        frames=VolumeFrames(num_frames=5, temporal_method="linear", size=(16, 24)), layout=layout
    )
    sample = dataset(BratsSource("brats", str(tmp_path)), tmp_path, render)[0]
    geometry = FrameGeometry.from_dict(sample.target["geometry"])
    assert geometry.layout == layout and geometry.volume_shape == (10, 10, 10)
    expected = voxel_box_to_frame([2, 3, 4, 4, 6, 8], geometry)
    # x: 2 * 24/10 = 4.8, 4 * 2.4 = 9.6; y: 3 * 1.6 = 4.8, 6 * 1.6 = 9.6; z (10 -> 5): 4/2 = 2, 8/2 = 4
    assert expected == pytest.approx([4.8, 4.8, 2, 9.6, 9.6, 4])
    assert sample.target["bbox_3d"] == expected
    answer = answer_json(sample)
    assert answer["bbox_3d"] == outer_int_box(expected) == [4, 4, 2, 10, 10, 4]
    # peak slice 4 (centre 4.5) -> 4.5 / 2 - 0.5 = 1.75 -> frame 2
    assert answer["peak_slice"] == sample.target["peak_slice"] == nearest_frame(4, geometry) == 2
    video = sample.messages[0]["content"][0]["video"]
    assert video.shape == ((20, 16, 24, 3) if layout == "sequence" else (5, 32, 48, 3))


# ---------------------------------------------------------------- synthetic data, datamodule, collator


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write(tmp_path_factory.mktemp("brats"), num_train=3, num_val=2, num_test=1, seed=1)


def test_synthetic_layout_and_validate(synthetic: dict[str, Path]) -> None:
    assert set(synthetic) == {"train", "val", "test"}
    assert [len([p for p in synthetic[s].iterdir() if p.name.startswith("BraTS")]) for s in synthetic] == [
        3,
        2,
        1,
    ]
    case = synthetic["train"] / "BraTS-GLI-00000-000"
    assert sorted(p.name for p in case.iterdir()) == [
        f"BraTS-GLI-00000-000-{m}.nii.gz" for m in ("seg", *MODS)
    ]
    assert nib.load(str(case / "BraTS-GLI-00000-000-t1c.nii.gz")).shape == (48, 56, 40)
    assert nib.load(str(synthetic["val"] / MSD_DIR / "imagesTr" / "BRATS_001.nii.gz")).shape == (
        48,
        56,
        40,
        4,
    )
    for path in synthetic.values():
        assert validate_file(path) == []
    assert validate_file(synthetic["val"] / MSD_DIR) == []
    assert validate_file(case) == []


def test_synthetic_tumour_is_visible_and_matches_the_seg(synthetic: dict[str, Path]) -> None:
    for case in sorted(synthetic["train"].iterdir()):
        load = {
            m: np.asarray(nib.load(str(next(case.glob(f"*-{m}.nii.gz")))).dataobj) for m in (*MODS, "seg")
        }
        seg = load.pop("seg")
        truth = tumour_truth(seg, list(load.values()))
        bright = load["t2f"] > 600  # tissue ~300, tumour ~900 (noise std 15)
        assert np.array_equal(bright, seg > 0)
        assert (load["t1n"][seg > 0] < 400).all()  # darker in native T1
        brain = load["t1c"] != 0
        assert truth.brain_voxels == int(brain.sum()) and 0.005 < truth.tumor_ratio < 0.2


def test_synthetic_deterministic(tmp_path: Path) -> None:
    def arrays(root: Path) -> dict[str, np.ndarray]:
        return {
            str(p.relative_to(root)): np.asarray(nib.load(str(p)).dataobj)
            for p in sorted(root.rglob("*.nii.gz"))
        }

    kwargs = {"num_train": 1, "num_val": 1, "num_test": 0, "shape": (24, 28, 24)}
    a, b, c = (
        arrays(write(tmp_path / n, seed=s, **kwargs)["train"].parent)
        for n, s in (("a", 3), ("b", 3), ("c", 4))
    )
    assert len(a) == 5 + 5 + 2
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    with pytest.raises(ValueError, match="shape"):
        write(tmp_path / "d", shape=(8, 8, 8))


def test_datamodule_from_config_yields_samples_that_collate(
    synthetic: dict[str, Path], tiny_processors: dict, tiny_vision: dict
) -> None:
    cfg = OmegaConf.load(CONF / "data" / "brats.yaml")
    cfg.root = str(synthetic["train"].parent)
    cfg.seed = 0  # ${seed} is the run's, absent from the group file alone
    cfg.frames.num_frames = 4
    cfg.frames.size = [28, 28]
    # As vlmlab.run builds it: partial, converted, then given the task's collator.
    dm = instantiate(cfg, _partial_=True, _convert_="all")(
        collator=SFTCollator(tiny_processors["qwen2_5_vl"]), vision=tiny_vision["qwen2_5_vl"]
    )
    dm.num_workers = 0
    assert isinstance(dm, BratsDataModule)
    dm.prepare_data()  # nothing missing: nothing written
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 3
    assert isinstance(dm.datasets["val"], ConcatDataset) and len(dm.datasets["val"]) == 2 + 1
    msd = dm.datasets["val"][2]
    assert msd.id == "msd_val/BRATS_001" and msd.metadata["modalities"] == ["FLAIR", "T1w", "t1gd", "T2w"]
    for sample in (dm.datasets["train"][0], msd):
        assert isinstance(sample, Sample)
        assert sample.messages[0]["content"][0]["video"].shape == (16, 28, 28, 3)
        assert answer_json(sample)["bbox_3d"] == outer_int_box(
            voxel_box_to_frame(
                sample.target["bbox_3d_voxel"], FrameGeometry.from_dict(sample.target["geometry"])
            )
        )
    batch = next(iter(dm.train_dataloader()))
    assert batch.inputs["input_ids"].shape[0] == 1
    assert batch.inputs["video_grid_thw"].tolist() == [[8, 2, 2]]  # 16 frames / 2, 28 px / 14
    assert (batch.labels != -100).any() and batch.targets[0]["geometry"]["num_modalities"] == 4
    eval_batch = next(iter(dm.val_dataloader()))
    assert eval_batch.prompt_inputs is not None and len(eval_batch) == 2


def test_datamodule_synthesizes_when_missing(tmp_path: Path) -> None:
    dm = BratsDataModule(
        root=str(tmp_path / "synth"),
        train_sources=[{"kind": "brats", "path": "train"}],
        val_sources=[BratsSource("brats", "val"), BratsSource("msd", f"val/{MSD_DIR}", modalities=["T1w"])],
        frames=SMALL,
        synthesize=True,
        synth_cases=2,
        layout="tiled",
    )
    dm.prepare_data()
    dm.setup("validate")
    assert set(dm.datasets) == {"val"} and len(dm.datasets["val"]) == 6 + 1
    single = dm.datasets["val"][6]  # MSD with one channel kept: a one-modality video
    assert single.messages[0]["content"][0]["video"].shape == (4, 28, 28, 3)
    assert single.target["geometry"]["grid"] == [1, 1]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2


def test_msd_single_modality_volume(tmp_path: Path) -> None:
    volumes, seg = hand_volumes()
    save(volumes[0], tmp_path / "imagesTr" / "BRATS_007.nii.gz")
    save(seg, tmp_path / "labelsTr" / "BRATS_007.nii.gz")
    save(volumes[0], tmp_path / "imagesTr" / "._BRATS_007.nii.gz")  # an archive's resource fork: not a case
    assert validate_file(tmp_path) == []
    ds = dataset(
        BratsSource("msd", str(tmp_path)), tmp_path, BratsRender(frames=VolumeFrames(num_frames=None))
    )
    assert len(ds) == 1
    sample = ds[0]
    assert sample.metadata["modalities"] == ["MRI"] and sample.target["tumor_ratio"] == 24 / 512
    assert sample.messages[0]["content"][0]["video"].shape == (10, 10, 10, 3)


# ---------------------------------------------------------------- the BraTS recipe's video + annotation form


def write_mp4(path: Path, frames: np.ndarray, fps: int = 4) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt, stream.options = "yuv444p", {"crf": "0"}  # lossless: the pixels survive
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiled.mp4``: 2 modalities tiled 1x2, 6 frames of 16x24 tiles, a bright block at x 6..11, y 4..9,
    frames 2..3; ``plain.mp4``: one modality, 8 frames 16x24, the block at the same place."""
    root = tmp_path_factory.mktemp("videos")
    geometry = FrameGeometry((12, 16, 24), num_frames=6, num_modalities=2, layout="tiled")
    tiles = []
    for m in range(2):
        a = np.full((6, 16, 24, 3), 40, np.uint8)
        a[2:4, 4:10, 6:12] = 200 + 20 * m
        tiles.append(a)
    write_mp4(root / "tiled.mp4", layout_frames(tiles, geometry))
    plain = np.full((8, 16, 24, 3), 40, np.uint8)
    plain[2:4, 4:10, 6:12] = 220
    write_mp4(root / "plain.mp4", plain)
    rows = [
        {"id": "t", "video": "tiled.mp4", "bbox_3d": [6, 4, 2, 12, 10, 4], "peak_slice": 3, "tumor_ratio": 0.1,
         "geometry": geometry.to_dict(), "modalities": ["t1c", "t2f"]},
        {"video": "plain.mp4", "bbox_3d": [6, 4, 2, 12, 10, 4], "peak_slice": 2, "tumor_ratio": 0.05},
    ]  # fmt: skip
    (root / "ann.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import datasets

    arrow = [{**r, "geometry": json.dumps(r.get("geometry")) if "geometry" in r else None} for r in rows]
    for r in arrow:
        r.setdefault("id", None)
        r.setdefault("modalities", None)
    datasets.Dataset.from_list(arrow).save_to_disk(str(root / "ann_arrow"))
    return root


@pytest.mark.parametrize("annotation", ["ann.jsonl", "ann_arrow", "ann_arrow/data-00000-of-00001.arrow"])
def test_video_source(videos: Path, annotation: str) -> None:
    path = videos / annotation
    assert validate_file(path) == []
    render = BratsRender(
        frames=VolumeFrames(num_frames=3, temporal_method="sample", size=(32, 48)), layout="sequence"
    )
    ds = dataset(BratsSource("video", str(path), name="vid"), path, render)
    assert len(ds) == 2
    tiled, plain = ds[0], ds[1]
    assert tiled.id == "vid/t" and plain.id == "vid/row1"
    # The tiled video is split back into 2 modalities of 6 frames of 16x24, re-rendered as a sequence of
    # 2 x 3 frames of 32x48: x, y scale by 2; frames 0, 2(.5->3), 5 kept: "sample" linspace(0, 5, 3) = 0, 2.5, 5
    # rounds (half to even) to 0, 2, 5.
    g = FrameGeometry.from_dict(tiled.target["geometry"])
    assert g.volume_shape == (6, 16, 24) and g.num_modalities == 2
    assert tiled.target["bbox_3d_voxel"] == [6, 4, 2, 12, 10, 4]
    assert tiled.target["bbox_3d"] == voxel_box_to_frame([6, 4, 2, 12, 10, 4], g)
    assert tiled.target["bbox_3d"][:2] == [12, 8] and tiled.target["bbox_3d"][3:5] == [24, 20]
    video = tiled.messages[0]["content"][0]["video"]
    assert video.shape == (6, 32, 48, 3)
    assert video[1, 10, 14, 0] > 180 and video[4, 10, 14, 0] > 180  # modality 0 and 1, frame 1 (slice 2)
    assert video[0, 10, 14, 0] < 80
    assert tiled.metadata["modalities"] == ["t1c", "t2f"]
    assert plain.target["geometry"]["volume_shape"] == [8, 16, 24] and plain.metadata["modalities"] == []
    assert answer_json(plain)["tumor_ratio"] == 0.05


# ---------------------------------------------------------------- bad input


def _missing_modality(root: Path) -> tuple[Path, str, str]:
    volumes, seg = hand_volumes()
    case = brats_case(root / "BraTS-GLI-00009-000", volumes, seg, skip="t2f")
    return case / "*-t2f.nii.gz", "0", "t2f"


def _shape_mismatch(root: Path) -> tuple[Path, str, str]:
    volumes, seg = hand_volumes()
    volumes[3] = volumes[3][:, :, :8]
    case = brats_case(root / "BraTS-GLI-00009-000", volumes, seg)
    return case / "BraTS-GLI-00009-000-t2w.nii.gz", "0", "t2w"


def _empty_seg(root: Path) -> tuple[Path, str, str]:
    volumes, seg = hand_volumes()
    case = brats_case(root / "BraTS-GLI-00009-000", volumes, np.zeros_like(seg))
    return case / "BraTS-GLI-00009-000-seg.nii.gz", "0", "seg"


def _seg_shape(root: Path) -> tuple[Path, str, str]:
    volumes, seg = hand_volumes()
    case = brats_case(root / "BraTS-GLI-00009-000", volumes, seg[:9])
    return case / "BraTS-GLI-00009-000-seg.nii.gz", "0", "seg"


def _msd_missing_label(root: Path) -> tuple[Path, str, str]:
    volumes, seg = hand_volumes()
    save(np.stack(volumes, axis=-1), root / "imagesTr" / "BRATS_001.nii.gz")
    save(np.stack(volumes, axis=-1), root / "imagesTr" / "BRATS_002.nii.gz")
    save(seg, root / "labelsTr" / "BRATS_001.nii.gz")
    return root / "labelsTr" / "BRATS_002.nii.gz", "1", "seg"


def _annotation(root: Path, **change: object) -> Path:
    frames = np.zeros((8, 16, 24, 3), np.uint8)
    write_mp4(root / "v.mp4", frames)
    row = {"video": "v.mp4", "bbox_3d": [6, 4, 2, 12, 10, 4], "peak_slice": 2, "tumor_ratio": 0.05}
    good = dict(row)
    row.update(change)
    (root / "ann.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    return root / "ann.jsonl"


def _box_outside_width(root: Path) -> tuple[Path, str, str]:
    return _annotation(root, bbox_3d=[6, 4, 2, 30, 10, 4]), "1", "bbox_3d"


def _box_outside_frames(root: Path) -> tuple[Path, str, str]:
    return _annotation(root, bbox_3d=[6, 4, 2, 12, 10, 9]), "1", "bbox_3d"


def _box_inverted(root: Path) -> tuple[Path, str, str]:
    return _annotation(root, bbox_3d=[6, 4, 5, 12, 10, 4]), "1", "bbox_3d"


def _bad_ratio(root: Path) -> tuple[Path, str, str]:
    return _annotation(root, tumor_ratio=1.5), "1", "tumor_ratio"


def _missing_video(root: Path) -> tuple[Path, str, str]:
    return _annotation(root, video="nope.mp4"), "1", "video"


def _geometry_mismatch(root: Path) -> tuple[Path, str, str]:
    geometry = FrameGeometry((12, 16, 24), num_frames=6, num_modalities=2, layout="tiled").to_dict()
    return _annotation(root, geometry=geometry), "1", "geometry"


BAD = {
    "missing_modality": _missing_modality,
    "shape_mismatch": _shape_mismatch,
    "empty_seg": _empty_seg,
    "seg_shape": _seg_shape,
    "msd_missing_label": _msd_missing_label,
    "box_outside_width": _box_outside_width,
    "box_outside_frames": _box_outside_frames,
    "box_inverted": _box_inverted,
    "bad_ratio": _bad_ratio,
    "missing_video": _missing_video,
    "geometry_mismatch": _geometry_mismatch,
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_row_and_field(tmp_path: Path, case: str) -> None:
    file, row, field = BAD[case](tmp_path)
    problems = validate_file(tmp_path if not str(file).endswith(".jsonl") else file)
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(f"{file}:{row}: {field}: "), str(problems[0])
    # Construction checks headers/fields only: an empty segmentation is found when the case is decoded.
    kind = "video" if str(file).endswith(".jsonl") else ("msd" if "msd" in case else "brats")
    source_path = file if kind == "video" else tmp_path
    render = BratsRender(frames=SMALL)
    with pytest.raises(DataError) as raised:
        ds = dataset(BratsSource(kind, str(source_path)), source_path, render)
        for i in range(len(ds)):
            ds[i]
    assert f"{file}:{row}: {field}: " in str(raised.value)


def test_on_bad_sample_skip_drops_and_counts(tmp_path: Path) -> None:
    file, _, _ = _box_outside_width(tmp_path)
    ds = dataset(BratsSource("video", str(file)), file, BratsRender(frames=SMALL), on_bad_sample="skip")
    assert len(ds) == 1  # of 2 rows: the bad one is skipped (and logged)


def test_source_level_problems(tmp_path: Path) -> None:
    assert [str(p) for p in validate_file(tmp_path / "nowhere")] == [
        f"{tmp_path / 'nowhere'}:-: path: not found"
    ]
    (tmp_path / "empty").mkdir()
    assert [p.field for p in validate_file(tmp_path / "empty")] == ["cases"]
    with pytest.raises(DataError, match="no brats cases"):
        dataset(BratsSource("brats", "empty"), tmp_path / "empty", BratsRender(frames=SMALL))
    with pytest.raises(ValueError, match="source kind"):
        BratsSource("nifti", "x")  # type: ignore[arg-type]


def test_cli_validate_and_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vlmlab.tools.synth import main as synth
    from vlmlab.tools.validate import main as validate

    assert synth(["brats", str(tmp_path), "--num-train", "1", "--num-val", "1", "--num-test", "0"]) == 0
    assert validate(["brats", str(tmp_path / "val")]) == 0
    _missing_modality(tmp_path / "bad")
    assert validate(["brats", str(tmp_path / "bad")]) == 1
    assert "t2f: file not found" in capsys.readouterr().out


@pytest.mark.parametrize("preset", [None, "tiny"])
def test_config_composes_and_binds(tmp_path: Path, preset: str | None) -> None:
    from tests.helpers import compose_config
    from tests.test_configs import assert_targets_bind

    cfg = compose_config("train", ["data=brats"] + ([f"preset={preset}"] if preset else []), tmp_path)
    OmegaConf.resolve(cfg)
    assert_targets_bind(cfg.data)
    assert cfg.data.root == str(tmp_path / "data" / ("synthetic/brats" if preset else "brats"))


def processor_frame_shape(processor, num_frames: int, height: int, width: int) -> tuple[int, int]:
    """What the processor itself turns frames of ``height x width`` into (the peer of VisionGeometry)."""
    from transformers.video_utils import VideoMetadata

    video = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    metadata = VideoMetadata(total_num_frames=num_frames, fps=1.0, frames_indices=list(range(num_frames)))
    out = processor.video_processor(
        videos=[video], do_sample_frames=False, video_metadata=[metadata], return_tensors="pt"
    )
    _, grid_h, grid_w = (int(v) for v in out["video_grid_thw"][0])
    patch = int(processor.video_processor.patch_size)
    return grid_h * patch, grid_w * patch


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("layout", ["sequence", "tiled"])
def test_frames_are_fitted_so_the_processor_keeps_them(
    family: str, layout: str, tiny_processors: dict, tiny_vision: dict
) -> None:
    """The model must see the frames the boxes were mapped to: no second resize by the processor."""
    processor = tiny_processors[family]  # a small pixel budget: a 224x224 frame would be shrunk
    render = BratsRender(frames=VolumeFrames(num_frames=8, size=(224, 224)), layout=layout)
    assert processor_frame_shape(processor, 32 if layout == "sequence" else 8, 224, 224) != (224, 224)
    fitted = fit_render(render, tiny_vision[family])
    geometry = fitted.geometry((8, *fitted.frames.size), 4)
    assert (
        processor_frame_shape(processor, geometry.total_frames, *geometry.frame_shape) == geometry.frame_shape
    )
    assert fit_render(fitted, tiny_vision[family]) is fitted  # already a fixed point


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_sample_costs_are_the_vision_tokens_the_processor_makes(
    family: str, synthetic: dict[str, Path], tiny_processors: dict, tiny_vision: dict
) -> None:
    processor = tiny_processors[family]
    dm = BratsDataModule(
        root=str(synthetic["train"].parent),
        train_sources=[BratsSource("brats", "train")],
        frames=VolumeFrames(num_frames=4, size=(224, 224)),
        collator=SFTCollator(processor),
        vision=tiny_vision[family],
    )
    dm.setup("fit")
    train = dm.datasets["train"]
    video_token = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    counted = [
        float((dm.collator.train([train[i]]).inputs["input_ids"] == video_token).sum())
        for i in range(len(train))
    ]
    assert dm.sample_costs("train") == counted


def _tumour_centres(spread: float, cases: int = 40) -> np.ndarray:
    """[cases, 3] centres (voxel index means) of synthetic tumours drawn at ``spread``."""
    from vlmlab.data.synthetic.brats import draw_case

    rng = np.random.default_rng(0)
    centres = []
    for _ in range(cases):
        _, seg, brain = draw_case(rng, (48, 56, 40), spread)
        assert not (seg.astype(bool) & ~brain).any()  # the tumour stays inside the brain
        centres.append(np.argwhere(seg).mean(axis=0))
    return np.array(centres)


def test_spread_one_moves_tumours_further_from_the_brain_centre_than_the_default() -> None:
    default, wide = _tumour_centres(1 / np.sqrt(3)), _tumour_centres(1.0)
    middle = (np.array([48, 56, 40]) - 1) / 2
    # The default keeps every centre within 1/sqrt(3) of the room; spread 1 reaches further out.
    assert np.abs(wide - middle).max() > 1.3 * np.abs(default - middle).max()


@pytest.mark.parametrize("spread", [-0.1, 1.5])
def test_spread_outside_zero_to_one_is_refused(spread: float) -> None:
    from vlmlab.data.synthetic.brats import draw_case

    with pytest.raises(ValueError, match="spread must be in"):
        draw_case(np.random.default_rng(0), (48, 56, 40), spread)
