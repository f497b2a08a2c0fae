"""The brain-tumour detection datamodule: several sources per split, concatenated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmlab.data.base import Split, VisionLanguageDataModule
from vlmlab.data.brats.render import DEFAULT_FRAMES, BratsRender, fit_render
from vlmlab.data.brats.sources import BratsCase, BratsSource, read_source
from vlmlab.data.errors import Checked
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.folder import SyntheticRecipe
from vlmlab.data.volume import VolumeFrames
from vlmlab.tasks.brats_detection import PROMPT
from vlmlab.tasks.coords import Layout


class BratsDataModule(VisionLanguageDataModule):
    """Brain-tumour detection from one or more sources per split, concatenated (``ConcatDataset``).

    train_sources / val_sources / test_sources: :class:`BratsSource` lists (paths relative to ``root``).
    frames / layout / grid / slice_axis / prompt: see :class:`BratsRender`; the frame size is fitted
    to the model's vision geometry at setup so that the processor keeps the frames as they are.
    synth_cases: training cases of the synthetic set (``preset=tiny``); synth_options: the writer's other
        arguments (:func:`vlmlab.data.synthetic.brats.write`: ``num_val``, ``spread``, ...).
    Other arguments: :class:`~vlmlab.data.base.VisionLanguageDataModule`.
    """

    def __init__(
        self,
        train_sources: Iterable[BratsSource | Mapping[str, Any]] = (),
        val_sources: Iterable[BratsSource | Mapping[str, Any]] = (),
        test_sources: Iterable[BratsSource | Mapping[str, Any]] = (),
        frames: VolumeFrames | None = None,
        layout: Layout = "sequence",
        grid: Sequence[int] | None = None,
        slice_axis: int = 2,
        prompt: str | None = None,
        synth_cases: int = 24,
        synth_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.sources: dict[Split, list[BratsSource]] = {
            "train": [BratsSource.coerce(s) for s in train_sources or ()],
            "val": [BratsSource.coerce(s) for s in val_sources or ()],
            "test": [BratsSource.coerce(s) for s in test_sources or ()],
        }
        self.render = BratsRender(
            frames=frames if frames is not None else DEFAULT_FRAMES,
            layout=layout,
            grid=None if grid is None else tuple(grid),
            slice_axis=slice_axis,
            prompt=prompt or PROMPT,
        )
        self.synth_cases = synth_cases
        self.synth_options = dict(synth_options or {})

    def source_path(self, source: BratsSource) -> Path:
        path = Path(source.path)
        return path if path.is_absolute() else self.root / path

    def read_split(self, split: Split) -> list[Checked] | None:
        sources = self.sources[split]
        if not sources:
            return None
        return [read_source(s, self.source_path(s), self.render.slice_axis, self.check) for s in sources]

    def setup(self, stage: str | None = None) -> None:
        if self.vision is not None:
            self.render = fit_render(self.render, self.vision)
        super().setup(stage)

    def to_sample(self, item: BratsCase) -> Sample:
        return item.sample(self.render)

    def sample_cost(self, item: BratsCase) -> float:
        """Vision tokens of the largest video the render makes of the case (an upper bound: volumes
        with fewer slices than ``num_frames`` are not resampled up)."""
        geometry = self.render.max_geometry(item.num_modalities)
        return float(self.require_vision().video_tokens(geometry.total_frames, *geometry.frame_shape))

    def split_hint(self, split: Split) -> str:
        return f"set data.{split}_sources"

    def has_data(self) -> bool:
        return all(self.source_path(s).exists() for split in self.sources.values() for s in split)

    def synthetic_recipe(self) -> SyntheticRecipe:
        from vlmlab.data.synthetic.brats import write

        return SyntheticRecipe(
            write,
            {"num_train": self.synth_cases, **self.synth_options},
            keys={"num_train": "data.synth_cases"},
        )
