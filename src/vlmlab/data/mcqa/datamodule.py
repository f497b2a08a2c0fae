"""The multiple-choice VQA datamodule: parquet files, globs, folders or ``save_to_disk`` folders per split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmlab.data.base import Split, SplitFilesDataModule
from vlmlab.data.errors import Checked
from vlmlab.data.mcqa.rows import MCQARow, check_file, to_sample
from vlmlab.data.mcqa.table import base_dir_of, find_sources
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.folder import SyntheticRecipe

__all__ = ["MCQADataModule"]


class MCQADataModule(SplitFilesDataModule):
    """Multiple-choice VQA; each split is read from every source its file spec names.

    max_images: keep the first K images of each row (None: all).
    synth_rows: training rows of the synthetic set written for ``preset=tiny``; synth_options: the
        writer's other arguments (:func:`vlmlab.data.synthetic.mcqa.write`: ``num_val``,
        ``shuffle_options``, ``reasoning_fraction``, ...).
    Other arguments: :class:`~vlmlab.data.base.SplitFilesDataModule` (``duration_batching``: a row
    costs the number of images it shows).
    """

    def __init__(
        self,
        max_images: int | None = None,
        synth_rows: int = 64,
        synth_options: Mapping[str, Any] | None = None,
        train_file: str | None = "train.parquet",
        val_file: str | None = "val.parquet",
        test_file: str | None = "test.parquet",
        **kwargs: Any,
    ):
        super().__init__(train_file=train_file, val_file=val_file, test_file=test_file, **kwargs)
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images={max_images}; expected >= 1 or None")
        self.max_images = max_images
        self.synth_rows = synth_rows
        self.synth_options = dict(synth_options or {})

    def has_data(self) -> bool:
        # Split files may be globs or folders: "present" means that something matches.
        train = self.split_path("train")
        return train is None or bool(find_sources(train))

    def read_file(self, path: Path, split: Split) -> list[Checked]:
        return check_file(path, self.check)

    def to_sample(self, item: MCQARow) -> Sample:
        return to_sample(item.record(), item.index, item.path, self.max_images, base_dir_of(item.path))

    def sample_cost(self, item: MCQARow) -> float:
        """The number of images the row shows. The processor bounds every image by its pixel budget,
        so each costs at most the same number of vision tokens."""
        return float(min(item.num_images, self.max_images or item.num_images))

    def synthetic_recipe(self) -> SyntheticRecipe:
        from vlmlab.data.synthetic.mcqa import write

        return SyntheticRecipe(
            write, {"num_train": self.synth_rows, **self.synth_options}, keys={"num_train": "data.synth_rows"}
        )
