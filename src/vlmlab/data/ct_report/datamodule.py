"""The report-generation datamodule: one JSON file per split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmlab.data.base import Split, SplitFilesDataModule
from vlmlab.data.ct_report.rows import ReportRow, check_file, to_sample
from vlmlab.data.errors import Checked
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.folder import SyntheticRecipe
from vlmlab.data.volume import VolumeFrames, load_volume


class CTReportDataModule(SplitFilesDataModule):
    """Report generation from volumes; ``frames`` says how a volume becomes video frames.

    synth_cases: training cases of the synthetic set (``preset=tiny``); synth_options: the writer's
        other arguments (:func:`vlmlab.data.synthetic.ct_report.write`: ``num_val``, ``slices``, ``size``).
    Other arguments: :class:`~vlmlab.data.base.SplitFilesDataModule`.
    """

    def __init__(
        self,
        frames: VolumeFrames,
        synth_cases: int = 48,
        synth_options: Mapping[str, Any] | None = None,
        train_file: str | None = "train.json",
        val_file: str | None = "val.json",
        test_file: str | None = "test.json",
        **kwargs: Any,
    ):
        super().__init__(train_file=train_file, val_file=val_file, test_file=test_file, **kwargs)
        self.frames = frames
        self.synth_cases = synth_cases
        self.synth_options = dict(synth_options or {})

    def read_file(self, path: Path, split: Split) -> list[Checked]:
        return check_file(path, self.check)

    def to_sample(self, item: ReportRow) -> Sample:
        return to_sample(item, self.frames)

    def sample_cost(self, item: ReportRow) -> float:
        """Vision tokens of the row's volumes (frames x resolution, from the volume headers)."""
        vision = self.require_vision()
        tokens = 0
        for path in item.volume_paths():
            slices, height, width = load_volume(path, header_only=True).shape
            frames = slices if self.frames.num_frames is None else min(slices, self.frames.num_frames)
            h, w = self.frames.size if self.frames.size is not None else (height, width)
            tokens += vision.video_tokens(frames, h, w)
        return float(tokens)

    def synthetic_recipe(self) -> SyntheticRecipe:
        from vlmlab.data.synthetic.ct_report import write

        return SyntheticRecipe(
            write,
            {"num_train": self.synth_cases, **self.synth_options},
            keys={"num_train": "data.synth_cases"},
        )
