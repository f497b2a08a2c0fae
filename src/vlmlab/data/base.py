"""The LightningDataModule every data source extends: splits, validation at start, dataloaders,
and optional duration bucketing of training batches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from vlmlab.data.collate import QwenVLCollator
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sampler import DurationBatching, DurationBucketSampler

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
OnBadSample = Literal["raise", "skip"]
STAGE_SPLITS: dict[str, list[Split]] = {
    "fit": ["train", "val"],
    "validate": ["val"],
    "test": ["test"],
    "predict": ["test"],
}


def keep_good_rows(rows: list[Any], problems: list[DataProblem], on_bad_sample: OnBadSample, path: Path) -> list[Any]:
    """Apply the ``on_bad_sample`` policy: raise every problem at once, or drop the bad rows *and say so*."""
    if not problems:
        return rows
    if on_bad_sample == "raise":
        raise DataError(problems)
    bad = {p.row for p in problems}
    for problem in problems:
        log.warning("skipping bad sample: %s", problem)
    log.warning("%s: skipped %d of %d rows (data.on_bad_sample=skip)", path, len(bad), len(rows))
    return [row for i, row in enumerate(rows) if i not in bad]


def dataset_costs(dataset: Dataset) -> list[float]:
    """Per-sample batching costs of a dataset (seconds of video, or estimated vision tokens)."""
    if isinstance(dataset, ConcatDataset):
        return [c for part in dataset.datasets for c in dataset_costs(part)]
    costs = getattr(dataset, "sample_costs", None)
    if costs is None:
        raise NotImplementedError(f"{type(dataset).__name__} has no sample_costs(): duration batching needs one")
    return list(costs())


class VisionLanguageDataModule(pl.LightningDataModule):
    """Shared plumbing. A source implements :meth:`build_dataset` (one split file to a Dataset) and
    :meth:`write_synthetic`; sources whose splits are not one file each override :meth:`build_split`,
    :meth:`has_data` and :meth:`missing_split_hint`.

    root: the dataset folder; split files are relative to it unless absolute.
    collator: built from the task config (SFT, GRPO or classification) and the model's processor.
    synthesize: write a synthetic dataset into ``root`` when it has no data (``preset=tiny``).
    on_bad_sample: ``raise`` stops at start naming file, row and field; ``skip`` drops and counts.
    duration_batching: pack training batches by per-sample cost (:class:`DurationBatching`, or a
        mapping of its fields) instead of a fixed ``batch_size``; None: fixed batches.
    """

    def __init__(
        self,
        root: str,
        collator: QwenVLCollator | None = None,
        train_file: str | None = "train.json",
        val_file: str | None = "val.json",
        test_file: str | None = "test.json",
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        synthesize: bool = False,
        on_bad_sample: OnBadSample = "raise",
        duration_batching: DurationBatching | Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"data.on_bad_sample={on_bad_sample!r}; expected 'raise' or 'skip'")
        self.root = Path(root)
        self.collator = collator
        self.files: dict[Split, str | None] = {"train": train_file, "val": val_file, "test": test_file}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.synthesize = synthesize
        self.on_bad_sample: OnBadSample = on_bad_sample
        if isinstance(duration_batching, Mapping):
            duration_batching = DurationBatching(**duration_batching)
        self.duration_batching = duration_batching
        self.datasets: dict[Split, Dataset] = {}

    def split_path(self, split: Split) -> Path | None:
        name = self.files[split]
        if name is None:
            return None
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def build_dataset(self, path: Path) -> Dataset:
        raise NotImplementedError

    def build_split(self, split: Split) -> Dataset | None:
        """The dataset of ``split``, or None when the split is not configured."""
        path = self.split_path(split)
        return None if path is None else self.build_dataset(path)

    def has_data(self) -> bool:
        """Whether ``root`` already holds the dataset (else ``synthesize`` writes one)."""
        train = self.split_path("train")
        return train is None or train.exists()

    def missing_split_hint(self, split: Split) -> str:
        return f"set data.{split}_file"

    def write_synthetic(self, root: Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no synthetic generator")

    def prepare_data(self) -> None:
        if self.synthesize and not self.has_data():
            log.info("writing a synthetic dataset to %s", self.root)
            self.write_synthetic(self.root)

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", ["train", "val", "test"]):
            if split in self.datasets:
                continue
            dataset = self.build_split(split)
            if dataset is None:
                continue
            if len(dataset) == 0:
                raise DataError.one(self.split_path(split) or self.root, "-", "rows", f"the {split} split is empty")
            self.datasets[split] = dataset

    def sample_costs(self, split: Split) -> list[float]:
        """Per-sample costs of ``split`` in dataset order (for :class:`DurationBucketSampler`)."""
        return dataset_costs(self._dataset(split))

    def _dataset(self, split: Split) -> Dataset:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} split: {self.missing_split_hint(split)} (and call setup)")
        return self.datasets[split]

    def _collator(self) -> QwenVLCollator:
        if self.collator is None:
            raise RuntimeError("the datamodule needs a collator (train.py passes the task's collator)")
        return self.collator

    def _loader(self, split: Split, batch_size: int, shuffle: bool, collate: Callable) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def _bucketed_loader(self, batching: DurationBatching) -> DataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
            raise ValueError(
                "data.duration_batching splits batches across ranks itself: set trainer.use_distributed_sampler=false"
            )
        sampler = DurationBucketSampler(
            self.sample_costs("train"),
            target_batch_duration=batching.target_batch_duration,
            max_batch_size=batching.max_batch_size,
            min_batch_size=batching.min_batch_size,
            drop_last=batching.drop_last,
            shuffle=batching.shuffle,
            seed=batching.seed,
        )
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        return DataLoader(
            self._dataset("train"),
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self._collator().train,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.duration_batching is not None:
            return self._bucketed_loader(self.duration_batching)
        return self._loader("train", self.batch_size, shuffle=True, collate=self._collator().train)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False, collate=self._collator().eval)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False, collate=self._collator().eval)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
