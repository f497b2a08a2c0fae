"""The robot reward datamodule: one local LeRobot dataset folder, split by episode."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch.utils.data import DataLoader

from vlmlab.data.base import SampleDataset, Split, VisionLanguageDataModule
from vlmlab.data.errors import Checked, DataError, SkipLedger
from vlmlab.data.lerobot.frames import LeRobotFrames
from vlmlab.data.lerobot.local import DEFAULT_CAMERAS, DEFAULT_REPO_ID, read_info, resolve_num_classes
from vlmlab.data.lerobot.splits import EpisodeSpec, episode_spec, split_episodes
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.folder import SyntheticRecipe

log = logging.getLogger(__name__)

__all__ = ["LeRobotRewardDataModule"]


class LeRobotRewardDataModule(VisionLanguageDataModule):
    """Reward classification on a local LeRobot dataset, split by episode.

    The dataset is one folder, not split files: ``setup`` opens it once (whatever the stage), applies
    the bad-sample policy to every frame and gives each split the usable frames of its episodes.
    ``prepare_data`` writes the synthetic dataset when ``synthesize`` is on and ``root`` has no
    ``meta/info.json``; after it :attr:`num_classes` is known (no frame is read).

    root: the dataset folder. repo_id: lerobot's name for it (never looked up on the hub).
    cameras: feature keys in the order their images appear in the prompt.
    num_classes: None: the length of ``reward_bins`` in ``meta/info.json``.
    val_episodes / test_episodes: a fraction of the episodes (seeded by ``split_seed``), a list of
        episode indices, or None (see :func:`~vlmlab.data.lerobot.splits.split_episodes`).
    synth_episodes / synth_video: the synthetic dataset's episode count, and video cameras (AV1 mp4).
    predict_episodes: episodes (of any split) whose every usable frame ``predict_dataloader`` yields
        in frame order, for per-episode reward curves; None: the test episodes.
    Other arguments: :class:`~vlmlab.data.base.VisionLanguageDataModule` (``duration_batching``: every
    frame costs its camera count).
    """

    def __init__(
        self,
        root: str,
        repo_id: str = DEFAULT_REPO_ID,
        cameras: Sequence[str] = DEFAULT_CAMERAS,
        num_classes: int | None = None,
        val_episodes: EpisodeSpec = 0.15,
        test_episodes: EpisodeSpec = 0.15,
        split_seed: int = 0,
        synth_episodes: int = 12,
        synth_video: bool = False,
        predict_episodes: Sequence[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__(root=root, **kwargs)
        if num_classes is not None and int(num_classes) < 1:
            raise ValueError(f"data.num_classes={num_classes}; expected >= 1 or null (infer)")
        self.repo_id = repo_id
        self.cameras = tuple(cameras)
        self.configured_num_classes = num_classes
        self._num_classes: int | None = None if num_classes is None else int(num_classes)
        self.val_episodes = episode_spec(val_episodes)
        self.test_episodes = episode_spec(test_episodes)
        self.split_seed = split_seed
        self.synth_episodes = synth_episodes
        self.synth_video = synth_video
        self.predict_episodes = None if predict_episodes is None else [int(e) for e in predict_episodes]
        self.frames: LeRobotFrames | None = None
        self.split_episodes: dict[Split, list[int]] = {}
        self.predict_dataset: SampleDataset[int] | None = None

    @property
    def num_classes(self) -> int:
        """Configured ``num_classes``, else the length of ``reward_bins`` read from ``meta/info.json``
        (a DataError naming info.json and the field for a scalar or missing ``reward_bins``)."""
        if self._num_classes is None:
            self._num_classes = resolve_num_classes(None, read_info(self.root), self.root)
        return self._num_classes

    def has_data(self) -> bool:
        return (self.root / "meta" / "info.json").is_file()

    def synthetic_recipe(self) -> SyntheticRecipe:
        from vlmlab.data.synthetic.lerobot import write

        return SyntheticRecipe(
            write,
            {"num_episodes": self.synth_episodes, "video": self.synth_video},
            keys={"num_episodes": "data.synth_episodes", "video": "data.synth_video"},
        )

    def split_hint(self, split: Split) -> str:
        return f"set data.{split}_episodes (a fraction or a list of episodes)"

    def to_sample(self, item: int) -> Sample:
        return self._opened().sample(item)

    def sample_cost(self, item: int) -> float:
        """The number of camera images a frame shows (the same for every frame)."""
        return float(len(self.cameras))

    def _opened(self) -> LeRobotFrames:
        if self.frames is None:
            raise RuntimeError("the LeRobot dataset is not open: call setup")
        return self.frames

    def _dataset(self, positions: list[int]) -> SampleDataset[int]:
        return self.sample_dataset(positions)

    def _ledger(self, split: Split, checked: Checked[int], episodes: set[int]) -> SkipLedger:
        """What the start-of-run checks dropped from the frames of ``episodes``."""
        frames = self._opened()
        mine = [found for pos, found in enumerate(checked.problems) if frames.episode(pos) in episodes]
        dropped = [p for found in mine for p in found]
        return SkipLedger(split, str(self.root), len(mine), dropped[:5], sum(1 for found in mine if found))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frames = self.frames = LeRobotFrames(
            self.root, self.repo_id, self.cameras, self.configured_num_classes
        )
        self._num_classes = frames.num_classes
        checked = frames.checked(self.check)
        kept = self.keep(checked)
        if not kept:
            raise DataError.one(self.root, "-", "rows", "the dataset is empty")
        usable = sorted({frames.episode(pos) for pos in kept})  # episodes with a usable frame
        self.split_episodes = split_episodes(usable, self.val_episodes, self.test_episodes, self.split_seed)
        # Episodes without a usable frame are in no split: their frames count against train's fraction.
        unusable = {frames.episode(pos) for pos in checked.items} - set(usable)
        for split, episodes in self.split_episodes.items():
            if episodes:
                wanted = set(episodes)
                self.datasets[split] = self._dataset([pos for pos in kept if frames.episode(pos) in wanted])
                self.ledgers[split] = self._ledger(
                    split, checked, wanted | (unusable if split == "train" else set())
                )
        predict = self.split_episodes["test"] if self.predict_episodes is None else self.predict_episodes
        unknown = sorted(set(predict) - set(usable))
        if unknown:
            raise ValueError(
                f"data.predict_episodes: episodes {unknown} have no usable frame in {self.root} "
                f"(episodes {usable[0]}..{usable[-1]})"
            )
        if predict:
            wanted = set(predict)
            ordered = sorted(
                (pos for pos in kept if frames.episode(pos) in wanted),
                key=lambda pos: (frames.episode(pos), frames.frame_index(pos)),
            )
            self.predict_dataset = self._dataset(ordered)
        log.info(
            "%s: %d classes; episodes train %d, val %d, test %d",
            self.root,
            self.num_classes,
            *(len(self.split_episodes[s]) for s in ("train", "val", "test")),
        )

    def predict_dataloader(self) -> DataLoader:
        """Every usable frame of ``predict_episodes`` (default: the test episodes), episode by episode
        in frame order, never shuffled."""
        if self.predict_dataset is None:
            raise RuntimeError("no episodes to predict: set data.predict_episodes (or data.test_episodes)")
        return self._loader(self.predict_dataset, self._collator().eval, batch_size=self.eval_batch_size)
