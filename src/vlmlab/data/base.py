"""The LightningDataModule every data source extends: splits, validation at start, dataloaders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from vlmlab.data.collate import QwenVLCollator
from vlmlab.data.errors import DataError, DataProblem

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
OnBadSample = Literal["raise", "skip"]


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


class VisionLanguageDataModule(pl.LightningDataModule):
    """Shared plumbing; a source implements :meth:`build_dataset` (and :meth:`synthesize` for ``preset=tiny``).

    root: the dataset folder; split files are relative to it unless absolute.
    collator: built from the task config (SFT, GRPO or classification) and the model's processor.
    synthesize: write a synthetic dataset into ``root`` when it has no split files (``preset=tiny``).
    on_bad_sample: ``raise`` stops at start naming file, row and field; ``skip`` drops and counts.
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
        self.datasets: dict[Split, Dataset] = {}

    def split_path(self, split: Split) -> Path | None:
        name = self.files[split]
        if name is None:
            return None
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def build_dataset(self, path: Path) -> Dataset:
        raise NotImplementedError

    def write_synthetic(self, root: Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no synthetic generator")

    def prepare_data(self) -> None:
        train = self.split_path("train")
        if self.synthesize and train is not None and not train.exists():
            log.info("writing a synthetic dataset to %s", self.root)
            self.write_synthetic(self.root)

    def setup(self, stage: str | None = None) -> None:
        wanted: list[Split] = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}.get(
            stage or "fit", ["train", "val", "test"]
        )
        for split in wanted:
            path = self.split_path(split)
            if split not in self.datasets and path is not None:
                dataset = self.build_dataset(path)
                if len(dataset) == 0:
                    raise DataError.one(path, "-", "rows", "the dataset is empty")
                self.datasets[split] = dataset

    def _loader(self, split: Split, batch_size: int, shuffle: bool, collate: Callable) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} split: set data.{split}_file")
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def _collator(self) -> QwenVLCollator:
        if self.collator is None:
            raise RuntimeError("the datamodule needs a collator (train.py passes the task's collator)")
        return self.collator

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True, collate=self._collator().train)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False, collate=self._collator().eval)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False, collate=self._collator().eval)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
