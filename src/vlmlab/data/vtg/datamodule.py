"""The temporal grounding datamodule: one JSONL file per split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmlab.data.base import Split, SplitFilesDataModule
from vlmlab.data.errors import Checked
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.folder import SyntheticRecipe
from vlmlab.data.video import VideoFrames
from vlmlab.data.vtg.rows import VTGRow, check_file
from vlmlab.data.vtg.samples import to_sample
from vlmlab.tasks.grounding import TemporalFormat


class VTGDataModule(SplitFilesDataModule):
    """Temporal grounding from videos: ``frames`` says how a clip becomes frames, ``temporal`` how times are written.

    video_dir: where relative ``video`` paths start (default: ``root``).
    synth_cases: training clips of the synthetic set (``preset=tiny``); synth_options: the writer's other
        arguments (:func:`vlmlab.data.synthetic.vtg.write`: ``num_val``, ``size``, ``fps``, ``max_window``, ...).
    "random" frame sampling is a training augmentation: val / test use "uniform" instead.
    Other arguments: :class:`~vlmlab.data.base.SplitFilesDataModule`.
    """

    def __init__(
        self,
        frames: VideoFrames | None = None,
        temporal: TemporalFormat | None = None,
        video_dir: str | None = None,
        train_file: str | None = "train.jsonl",
        val_file: str | None = "val.jsonl",
        test_file: str | None = "test.jsonl",
        synth_cases: int = 32,
        synth_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(train_file=train_file, val_file=val_file, test_file=test_file, **kwargs)
        self.frames = frames or VideoFrames()
        self.eval_frames = (
            replace(self.frames, sampling="uniform") if self.frames.sampling == "random" else self.frames
        )
        self.temporal = temporal or TemporalFormat()
        self.video_dir = Path(video_dir) if video_dir is not None else self.root
        self.synth_cases = synth_cases
        self.synth_options = dict(synth_options or {})

    def read_file(self, path: Path, split: Split) -> list[Checked]:
        return check_file(path, self.check, self.video_dir, training=split == "train")

    def to_sample(self, item: VTGRow) -> Sample:
        return to_sample(item, self.frames if item.training else self.eval_frames, self.temporal)

    def sample_cost(self, item: VTGRow) -> float:
        """The clip's duration in seconds (duration batching packs seconds of video)."""
        return float(item.row["duration"])

    def durations(self, split: Split) -> list[float]:
        """Clip durations of ``split`` in dataset order (builds the split if ``setup`` has not)."""
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self.sample_costs(split)

    def synthetic_recipe(self) -> SyntheticRecipe:
        from vlmlab.data.synthetic.vtg import write

        return SyntheticRecipe(
            write,
            {"num_train": self.synth_cases, **self.synth_options},
            keys={"num_train": "data.synth_cases"},
        )
