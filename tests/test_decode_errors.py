"""Decode-time failures are data errors (issue 11).

A sample whose file passes the start-of-run checks but fails when it is decoded (NaN voxels, a
truncated NIfTI, a broken mp4, corrupt image bytes) gives the same ``PATH:ROW: field: problem``
DataError in every source. Under ``data.on_bad_sample=skip`` it is replaced by the next good sample
(batches keep their size, the same on every build), counted per epoch as ``<split>/skipped_samples``,
listed in the log, and ``data.max_bad_fraction`` stops the run with a summary.

The corrupt inputs are written here from the synthetic writers' valid data. Files are corrupted after
the datamodules are set up (except where the reader keeps the file open or cached: MCQA, LeRobot), so
that the start-of-run checks, whatever they read, cannot see the damage: these tests are about decoding.
Training runs a no-model LightningModule on ids-only batches, so they take seconds.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from vlmlab.callbacks.skipped_samples import SkippedSamples
from vlmlab.data.base import VisionLanguageDataModule
from vlmlab.data.collate import VisionLanguageBatch
from vlmlab.data.errors import SKIPPED_KEY, DataError, SkipNote
from vlmlab.data.sample import Sample
from vlmlab.data.volume import VolumeFrames, VolumeWindow

BATCH = 2


# ---------------------------------------------------------------------------- a trainer without a model


class IdsCollator:
    """Batches of ids and metadata only (what skip counting reads): no processor, no tensors."""

    def train(self, samples: list[Sample]) -> VisionLanguageBatch:
        return VisionLanguageBatch(ids=[s.id for s in samples], metadata=[s.metadata for s in samples])

    eval = train


class Recorder(pl.LightningModule):
    """Records the ids of every batch it is given; one weight so that there is something to step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.train_ids: list[list[str]] = []
        self.val_ids: list[list[str]] = []

    def training_step(self, batch: VisionLanguageBatch, batch_idx: int) -> torch.Tensor:
        self.train_ids.append(list(batch.ids))
        return (self.weight - 1.0).pow(2).sum()

    def validation_step(self, batch: VisionLanguageBatch, batch_idx: int) -> None:
        self.val_ids.append(list(batch.ids))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(datamodule: VisionLanguageDataModule, epochs: int = 1) -> tuple[Recorder, pl.Trainer]:
    module = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if "val" in datamodule.datasets else 0,
        callbacks=[SkippedSamples()],
    )
    trainer.fit(module, datamodule=datamodule)
    return module, trainer


# ---------------------------------------------------------------------------- one corrupt dataset per source


@dataclass
class Case:
    """A source's valid dataset, the datamodules built on it, and the damage done to one sample.

    build: a set-up datamodule on the data (keyword arguments: the datamodule's). corrupt: damages the
    sample at train index ``bad`` (a no-op where the data were written damaged). expected: the start of
    its problem line, ``PATH:ROW: field:``. size: the train split's samples.
    """

    build: Callable[..., VisionLanguageDataModule]
    corrupt: Callable[[], None]
    bad: int
    expected: str
    size: int


def nothing() -> None:
    """The data were written damaged (the reader keeps the file open or cached)."""


def ct_case(tmp_path: Path, corruption: str = "nan_npy") -> Case:
    from vlmlab.data.ct_report import CTReportDataModule

    root = tmp_path / "ct"
    root.mkdir()
    nifti = corruption == "inf_nifti"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        volume = rng.uniform(0, 255, (8, 16, 16)).astype(np.float32)
        name = f"v{i}.nii.gz" if nifti and i == 3 else f"v{i}.npy"
        if name.endswith(".npy"):
            np.save(root / name, volume[None])
        else:
            save_nifti(volume.transpose(2, 1, 0), root / name)  # NIfTI (X, Y, Z): slices last
        messages = [
            {"role": "user", "content": "<video>\nReport."},
            {"role": "assistant", "content": f"R{i}"},
        ]
        rows.append({"id": f"case_{i}", "messages": messages, "videos": [name]})
    path = root / "train.json"
    path.write_text(json.dumps(rows))
    frames = VolumeFrames(num_frames=4, temporal_method="sample", size=(16, 16))

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        settings = {"train_file": "train.json", "val_file": None, "test_file": None, **kwargs}
        datamodule = CTReportDataModule(frames=frames, root=str(root), collator=IdsCollator(), **settings)
        datamodule.setup("fit")
        return datamodule

    def corrupt() -> None:
        if nifti:
            volume = rng.uniform(0, 255, (16, 16, 8)).astype(np.float32)
            volume[3, 4, 5] = np.inf
            save_nifti(volume, root / "v3.nii.gz")
        else:
            volume = np.load(root / "v3.npy")
            volume[0, 2, 5, 5] = np.nan
            np.save(root / "v3.npy", volume)

    return Case(build, corrupt, 3, f"{path}:3: videos:", 8)


def save_nifti(data: np.ndarray, path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def brats_builder(root: Path) -> Callable[..., VisionLanguageDataModule]:
    """``build(**settings)``: a set-up BratsDataModule over ``root/train``'s cases, 4 frames of 24x24."""
    from vlmlab.data.brats import BratsDataModule, BratsSource

    frames = VolumeFrames(num_frames=4, size=(24, 24), window=VolumeWindow("percentile", 0.5, 99.5))

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = BratsDataModule(
            train_sources=[BratsSource("brats", "train")],
            frames=frames,
            root=str(root),
            collator=IdsCollator(),
            **kwargs,
        )
        datamodule.setup("fit")
        return datamodule

    return build


def brats_case(tmp_path: Path, corruption: str = "truncated") -> Case:
    from vlmlab.data.synthetic.brats import write

    root = tmp_path / "brats"
    write(root, num_train=4, num_val=0, num_test=0, shape=(24, 24, 24))
    folder = sorted(p for p in (root / "train").iterdir() if p.is_dir())[1]  # case (row) 1
    file = {"truncated": "t1c", "no_tumour": "seg", "nan": "t2w"}[corruption]
    target = folder / f"{folder.name}-{file}.nii.gz"
    build = brats_builder(root)

    def corrupt() -> None:
        if corruption == "truncated":
            data = target.read_bytes()
            target.write_bytes(data[: len(data) // 2])
        elif corruption == "no_tumour":
            save_nifti(np.zeros((24, 24, 24), dtype=np.uint8), target)
        else:
            volume = np.full((24, 24, 24), 100.0, dtype=np.float32)
            volume[5, 6, 7] = np.nan
            save_nifti(volume, target)

    problem = {
        "truncated": "unreadable NIfTI file",
        "no_tumour": "no tumour voxels",
        "nan": "volume contains non-finite",
    }
    return Case(build, corrupt, 1, f"{target}:1: {file}: {problem[corruption]}", 4)


def vtg_case(tmp_path: Path, corruption: str = "truncated") -> Case:
    from vlmlab.data.synthetic.vtg import write
    from vlmlab.data.video import VideoFrames
    from vlmlab.data.vtg import VTGDataModule

    root = tmp_path / "vtg"
    paths = write(root, num_train=6, num_val=0, num_test=0, size=32)
    video = root / json.loads(paths["train"].read_text().splitlines()[2])["video"]  # line 3

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = VTGDataModule(
            frames=VideoFrames(max_frames=4, height=32, width=32),
            root=str(root),
            val_file=None,
            test_file=None,
            collator=IdsCollator(),
            **kwargs,
        )
        datamodule.setup("fit")
        return datamodule

    def corrupt() -> None:
        data = video.read_bytes()
        damaged = {"zero_bytes": b"", "truncated": data[: len(data) // 2], "garbage": b"\x00garbage" * 64}
        video.write_bytes(damaged[corruption])

    return Case(build, corrupt, 2, f"{paths['train']}:3: video:", 6)


def mcqa_case(tmp_path: Path) -> Case:
    from vlmlab.data.mcqa import MCQADataModule
    from vlmlab.data.synthetic.mcqa import write

    root = tmp_path / "mcqa"
    path = write(root, num_train=8, num_val=0, num_test=0, size=32, kinds=["synth_colour"])["train"]
    # The parquet is memory-mapped once read: damage the row's image bytes before any datamodule.
    table = pq.read_table(path)
    rows = table.to_pylist()
    rows[3]["images"][0]["bytes"] = b"\x89PNG\r\n\x1a\n" + b"not an image" * 8
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = MCQADataModule(
            root=str(root), val_file=None, test_file=None, collator=IdsCollator(), **kwargs
        )
        datamodule.setup("fit")
        return datamodule

    return Case(build, nothing, 3, f"{path}:3: images[0]: does not decode as an image", 8)


CAMERA = "observation.images.cam_left_wrist"


def lerobot_case(tmp_path: Path) -> Case:
    from vlmlab.data.lerobot import LeRobotRewardDataModule
    from vlmlab.data.synthetic.lerobot import write

    root = tmp_path / "lerobot"
    write(root, num_episodes=2, frames_per_episode=4, size=16)
    # lerobot caches the frames when it opens the folder: damage one camera image before. Position 5 is
    # not an episode's first frame (0 and 4), the one frame per episode the validator decodes.
    [file] = sorted((root / "data").glob("*/*.parquet"))
    table = pq.read_table(file)
    column = table.column(CAMERA).to_pylist()
    column[5] = {**column[5], "bytes": b"garbage!" * 8}
    index = table.schema.get_field_index(CAMERA)
    field = table.schema.field(index)
    pq.write_table(table.set_column(index, field, pa.array(column, type=field.type)), file)

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = LeRobotRewardDataModule(
            str(root), val_episodes=None, test_episodes=None, collator=IdsCollator(), **kwargs
        )
        datamodule.setup("fit")
        return datamodule

    return Case(build, nothing, 5, f"{root}:5: {CAMERA}: does not decode as an image", 8)


CORRUPTIONS: dict[str, Callable[[Path], Case]] = {
    "ct_nan_npy": lambda p: ct_case(p, "nan_npy"),
    "ct_inf_nifti": lambda p: ct_case(p, "inf_nifti"),
    "brats_truncated_nii_gz": lambda p: brats_case(p, "truncated"),
    "brats_seg_without_tumour": lambda p: brats_case(p, "no_tumour"),
    "brats_nan_voxels": lambda p: brats_case(p, "nan"),
    "vtg_zero_byte_mp4": lambda p: vtg_case(p, "zero_bytes"),
    "vtg_truncated_mp4": lambda p: vtg_case(p, "truncated"),
    "vtg_garbage_mp4": lambda p: vtg_case(p, "garbage"),
    "mcqa_corrupt_image_bytes": mcqa_case,
    "lerobot_corrupt_camera_image": lerobot_case,
}
# One corruption per source for the training runs.
SOURCES = ["ct_nan_npy", "brats_truncated_nii_gz", "vtg_truncated_mp4", "mcqa_corrupt_image_bytes"]
SOURCES.append("lerobot_corrupt_camera_image")


# ---------------------------------------------------------------------------- every source


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_raise_names_file_row_and_field(corruption: str, tmp_path: Path) -> None:
    case = CORRUPTIONS[corruption](tmp_path)
    datamodule = case.build()
    case.corrupt()
    dataset = datamodule.datasets["train"]
    assert len(dataset) == case.size  # the start-of-run checks kept the row: the damage is found decoding
    with pytest.raises(DataError) as raised:
        dataset[case.bad]
    message = str(raised.value)
    assert message.startswith("1 problem(s) in the data:\n") and case.expected in message, message
    assert dataset[(case.bad + 1) % case.size].id  # the others still decode


@pytest.mark.parametrize("source", SOURCES)
def test_skip_replaces_counts_logs_and_stops(
    source: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    case = CORRUPTIONS[source](tmp_path)
    tolerant, again, strict = (
        case.build(on_bad_sample="skip", max_bad_fraction=0.5, batch_size=BATCH),
        case.build(on_bad_sample="skip", max_bad_fraction=0.5, batch_size=BATCH),
        case.build(on_bad_sample="skip", batch_size=BATCH),  # the default 1%: one bad of a few is more
    )
    case.corrupt()

    with caplog.at_level(logging.WARNING):
        module, trainer = fit(tolerant)
    assert [len(ids) for ids in module.train_ids] == [BATCH] * (case.size // BATCH)  # sizes kept
    assert trainer.callback_metrics["train/skipped_samples"].item() == 1.0
    [warning] = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
    assert case.expected in warning and "skipped a train sample" in warning

    # The replacement is the next good sample, the same on another build (here without a trainer).
    dataset = again.datasets["train"]
    replaced = dataset[case.bad]
    assert replaced.id == dataset[(case.bad + 1) % case.size].id
    assert isinstance(replaced.metadata[SKIPPED_KEY], SkipNote)
    assert case.expected in replaced.metadata[SKIPPED_KEY]
    assert SKIPPED_KEY not in dataset[(case.bad + 1) % case.size].metadata
    assert [batch.ids for batch in again.train_dataloader()] == module.train_ids

    with pytest.raises(DataError) as raised:
        fit(strict)
    message = str(raised.value)
    assert f"1 of {case.size} samples of the train split skipped" in message, message
    assert "more than data.max_bad_fraction=0.01" in message and case.expected in message


# ---------------------------------------------------------------------------- the mechanics (on CT, the cheapest)


def test_counts_reach_the_main_process_from_workers(tmp_path: Path) -> None:
    case = ct_case(tmp_path)
    skipping = case.build(on_bad_sample="skip", max_bad_fraction=0.5, batch_size=BATCH, num_workers=1)
    raising = case.build(batch_size=BATCH)
    case.corrupt()
    module, trainer = fit(skipping)
    assert trainer.callback_metrics["train/skipped_samples"].item() == 1.0
    assert [len(ids) for ids in module.train_ids] == [BATCH] * 4
    # Under raise a worker's DataError reaches the main process as the same one message, no traceback.
    loader = DataLoader(raising.datasets["train"], batch_size=1, num_workers=1, collate_fn=list)
    with pytest.raises(DataError) as raised:
        list(loader)
    message = str(raised.value)
    assert message.startswith("1 problem(s) in the data:\n") and "Traceback" not in message, message
    assert [str(p).startswith(case.expected) for p in raised.value.problems] == [True]


def test_counted_per_epoch_and_per_validation_run(tmp_path: Path) -> None:
    case = ct_case(tmp_path)
    # 1 bad of 8 is 12.5%: under 15% each epoch, though two epochs together would be 25%.
    datamodule = case.build(
        on_bad_sample="skip", max_bad_fraction=0.15, batch_size=BATCH, val_file="train.json"
    )
    case.corrupt()
    module, trainer = fit(datamodule, epochs=2)
    assert len(module.train_ids) == 8 and trainer.callback_metrics["train/skipped_samples"].item() == 1.0
    assert trainer.callback_metrics["val/skipped_samples"].item() == 1.0
    assert all(len(ids) == BATCH for ids in module.train_ids + module.val_ids)


def test_rows_dropped_at_start_count_towards_the_fraction(tmp_path: Path) -> None:
    case = ct_case(tmp_path)
    (tmp_path / "ct" / "v6.npy").unlink()  # row 6 is dropped at start: 1 of 8 rows
    datamodule = case.build(on_bad_sample="skip", max_bad_fraction=0.2, batch_size=BATCH)
    assert len(datamodule.datasets["train"]) == 7
    case.corrupt()  # and one of the 7 left fails to decode: 2 of 8 = 25%
    with pytest.raises(DataError) as raised:
        fit(datamodule)
    message = str(raised.value)
    assert "2 of 8 samples of the train split skipped (25.0%)" in message, message
    assert "1 row(s) dropped at start, 1 failed to decode" in message and "v6.npy: file not found" in message
    # Dropped rows alone past the fraction stop the run at its first batch, before any decoding.
    datamodule = case.build(on_bad_sample="skip", max_bad_fraction=0.1, batch_size=BATCH)
    with pytest.raises(DataError, match="1 of 8 samples of the train split skipped"):
        fit(datamodule)


def test_a_split_where_nothing_decodes(tmp_path: Path) -> None:
    case = ct_case(tmp_path)
    datamodule = case.build(on_bad_sample="skip", max_bad_fraction=1.0)
    for i in range(8):
        (tmp_path / "ct" / f"v{i}.npy").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 8 samples decodes"):
        datamodule.datasets["train"][0]


def test_data_errors_survive_pickling_and_bad_settings_are_refused(tmp_path: Path) -> None:
    error = DataError.one("/data/x.json", 3, "videos[0]", "volume contains non-finite values: NaN")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.problems == error.problems
    case = ct_case(tmp_path)
    with pytest.raises(ValueError, match="max_bad_fraction"):
        case.build(max_bad_fraction=1.5)


def test_every_data_config_names_max_bad_fraction() -> None:
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    for path in sorted((conf / "data").glob("*.yaml")):
        assert OmegaConf.load(path).max_bad_fraction == 0.01, path
    callbacks = OmegaConf.load(conf / "callbacks" / "default.yaml")
    assert callbacks.skipped_samples._target_ == "vlmlab.callbacks.skipped_samples.SkippedSamples"
