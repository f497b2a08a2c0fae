"""The LightningDataModule every data source extends, and the dataset of checked items they all build.

A source only finds, checks and decodes its own files (:meth:`VisionLanguageDataModule.read_split`
returns a :class:`~vlmlab.data.errors.Checked`, :meth:`~VisionLanguageDataModule.to_sample` decodes an
item); this class owns what they share: the bad-sample policy (at start and at decode time, see
:class:`SampleDataset` and :meth:`VisionLanguageDataModule.on_before_batch_transfer`), synthetic data on
first use, the loaders (shuffled, distributed or duration-bucketed) and the training position for
exact resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import RunningStage, TrainerFn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from vlmlab.compat.lightning import batches_done, uses_distributed_sampler
from vlmlab.data.checks import Check, check_level, start_of_run
from vlmlab.data.collate import QwenVLCollator
from vlmlab.data.errors import (
    SKIPPED_KEY,
    Checked,
    DataError,
    Item,
    OnBadSample,
    SkipLedger,
    SkipNote,
    check_fraction,
    check_policy,
    keep_good,
    next_good,
    skip_notes,
)
from vlmlab.data.sample import Sample
from vlmlab.data.sampler import DurationBatching, DurationBucketSampler, ResumableSampler
from vlmlab.data.synthetic.folder import SyntheticRecipe, use_synthetic
from vlmlab.models.facts import VisionGeometry

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
STAGE_SPLITS: dict[str, tuple[Split, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}
# The split whose ledger counts the batches of a loop (prediction reads the test samples).
LOOP_SPLITS: dict[RunningStage, Split] = {
    RunningStage.TRAINING: "train",
    RunningStage.SANITY_CHECKING: "val",
    RunningStage.VALIDATING: "val",
    RunningStage.TESTING: "test",
    RunningStage.PREDICTING: "test",
}


class SampleDataset(Dataset, Generic[Item]):
    """Items that passed their checks, decoded to :class:`Sample` on access by ``decode``.

    cost: the item's batching cost (seconds of video, or vision tokens), for duration bucketing.
    on_bad_sample: what a :class:`DataError` raised by ``decode`` does. ``raise``: it propagates (a
        DataLoader worker's is rebuilt as the same DataError in the main process). ``skip``: the
        sample is replaced by the next index (wrapping around) that decodes, and the replacement's
        metadata carries a :class:`SkipNote` with the problems under :data:`SKIPPED_KEY`.

    Why the next good index: it is a pure function of the index and of which items fail, so every
    worker and every rank makes the same replacement, batches keep their size, the sampler's order
    (and so exact resume) is untouched, and nothing is shared between processes. Why a note in the
    sample: decoding runs in worker processes, whose counts would never reach the trainer; the note
    travels with the batch (collators keep ``metadata``) and is counted in the main process
    (:meth:`VisionLanguageDataModule.on_before_batch_transfer`). Failures met while decoding are
    remembered per dataset object (so per worker), only to avoid decoding a bad item twice.
    """

    def __init__(
        self,
        items: Sequence[Item],
        decode: Callable[[Item], Sample],
        cost: Callable[[Item], float] | None = None,
        on_bad_sample: OnBadSample = "raise",
    ):
        self.items = list(items)
        self.decode = decode
        self.cost = cost
        self.on_bad_sample = check_policy(on_bad_sample)
        self._failed: dict[int, SkipNote] = {}  # index -> its problems (a cache, never a result)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]  # IndexError out of range: ends iteration, never a skip
        index %= len(self.items)
        if self.on_bad_sample == "raise":
            return self.decode(item)
        if index not in self._failed:
            try:
                return self.decode(item)
            except DataError as error:
                self._failed[index] = SkipNote.of(error)
        sample = next_good(index, len(self.items), lambda i: self.decode(self.items[i]), self._failed)
        sample.metadata = {**sample.metadata, SKIPPED_KEY: self._failed[index]}
        return sample

    def sample_costs(self) -> list[float]:
        if self.cost is None:
            raise NotImplementedError("this data source has no per-sample cost for duration batching")
        return [float(self.cost(item)) for item in self.items]


def dataset_costs(dataset: Dataset) -> list[float]:
    """Per-sample batching costs of a dataset: its ``sample_costs()`` (a :class:`SampleDataset`, or any
    dataset that has one), or those of the parts of a concatenation."""
    if isinstance(dataset, ConcatDataset):
        return [c for part in dataset.datasets for c in dataset_costs(part)]
    sample_costs = getattr(dataset, "sample_costs", None)
    if sample_costs is None:
        raise NotImplementedError(
            f"{type(dataset).__name__} has no sample_costs(): duration batching needs one"
        )
    return [float(c) for c in sample_costs()]


class VisionLanguageDataModule(pl.LightningDataModule):
    """Shared plumbing of every source. A source implements :meth:`read_split`, :meth:`to_sample`,
    :meth:`has_data` and :meth:`synthetic_recipe` (and :meth:`sample_cost` for duration batching).

    root: the dataset folder.
    collator: the task's collator (SFT, GRPO or classification) on the model's processor.
    vision: the model's vision geometry (frame sizes the processor keeps, vision tokens of a sample).
    synthesize: write a synthetic dataset into ``root`` when it has no data (``preset=tiny``), stamped
        with its recipe; a folder stamped with another recipe stops the run at start
        (:func:`~vlmlab.data.synthetic.folder.use_synthetic`).
    on_bad_sample: ``raise`` stops at the first bad row (at start) or sample (at decode time) naming
        file, row and field; ``skip`` drops bad rows at start, replaces samples that fail to decode
        (:class:`SampleDataset`), and counts both.
    max_bad_fraction: under ``skip``, the run stops with a DataError summarising the skips once the
        rows dropped at start plus the samples skipped at decode time in the current epoch pass this
        fraction of a split's rows (:class:`~vlmlab.data.errors.SkipLedger`).
    check: what the start-of-run checks read (:meth:`read_split`): ``headers`` (default) or ``full``,
        every sample decoded as the validator does (:mod:`vlmlab.data.checks`).
    duration_batching: pack training batches by per-sample cost (:class:`DurationBatching`, or a
        mapping of its fields) instead of a fixed ``batch_size``; None: fixed batches.
    seed: seeds the training order (epoch ``e`` shuffles with ``seed + e``) and the loaders' workers.

    Exact resume: Lightning stores :meth:`state_dict` (the epoch and how many training batches were
    trained on in it) in every checkpoint; after :meth:`load_state_dict` the next training loader
    yields the rest of that epoch, exactly the batches an uninterrupted run would have seen (for any
    ``num_workers``: the count comes from the trainer, not from how far the sampler ran ahead).
    Data loading never draws from the global RNG, so it does not shift the training RNG stream.

    Skipped samples: every batch of every loop passes :meth:`on_before_batch_transfer` in the main
    process, which logs each skip note (python logging, warning), counts it in the split's ledger
    (per epoch: a training epoch, or one validation / test run) and applies ``max_bad_fraction``;
    :meth:`skipped_in_epoch` gives the count that ``vlmlab.callbacks.skipped_samples`` logs as
    ``<split>/skipped_samples``. Under DDP each process counts its own batches; the callback sums them
    at the end of the epoch and checks the total (:meth:`check_skipped`).
    """

    def __init__(
        self,
        root: str,
        collator: QwenVLCollator | None = None,
        vision: VisionGeometry | None = None,
        batch_size: int = 1,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        synthesize: bool = False,
        on_bad_sample: OnBadSample = "raise",
        max_bad_fraction: float = 0.01,
        check: Check = "headers",
        duration_batching: DurationBatching | Mapping[str, Any] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.root = Path(root)
        self.collator = collator
        self.vision = vision
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.synthesize = synthesize
        self.on_bad_sample = check_policy(on_bad_sample)
        self.max_bad_fraction = check_fraction(max_bad_fraction)
        self.check = check_level(check)
        self.ledgers: dict[str, SkipLedger] = {}  # per split: what was skipped, against its rows
        if isinstance(duration_batching, Mapping):
            duration_batching = DurationBatching(**duration_batching)
        self.duration_batching = duration_batching
        self.seed = int(seed) % 2**62  # seed + epoch must stay a valid generator seed
        self.datasets: dict[Split, Dataset] = {}
        self._resume_position: dict[str, Any] | None = None  # from load_state_dict, used once
        self._synthetic_checked = False  # every trainer call runs prepare_data: check (and warn) once

    # ------------------------------------------------------------------ what a source implements

    def read_split(self, split: Split) -> list[Checked] | None:
        """The items of ``split`` with their problems found at the level :attr:`check`, one
        :class:`Checked` per place read (a file, a folder); None when the split is not configured."""
        raise NotImplementedError

    def to_sample(self, item: Any) -> Sample:
        """Decode one checked item (a DataError naming file, row and field if it cannot be)."""
        raise NotImplementedError

    def sample_cost(self, item: Any) -> float:
        """The batching cost of one item: seconds of video, or vision tokens (see :attr:`vision`)."""
        raise NotImplementedError(f"{type(self).__name__} has no per-sample cost for duration batching")

    def has_data(self) -> bool:
        """Whether ``root`` already holds the dataset (else ``synthesize`` writes one)."""
        return self.root.exists()

    def synthetic_recipe(self) -> SyntheticRecipe:
        """The synthetic dataset ``synthesize`` writes into ``root``: a writer and its arguments."""
        raise NotImplementedError(f"{type(self).__name__} has no synthetic generator")

    def split_hint(self, split: Split) -> str:
        """How a user configures ``split`` (for the error when it is missing)."""
        return f"set data.{split}_file"

    # ------------------------------------------------------------------ shared

    def require_vision(self) -> VisionGeometry:
        if self.vision is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the model's vision geometry (vlmlab.run.build passes it)"
            )
        return self.vision

    def keep(self, checked: Checked) -> list[Any]:
        """The items of ``checked`` that the bad-sample policy keeps (or a DataError)."""
        return keep_good(checked, self.on_bad_sample)

    def sample_dataset(self, items: Sequence[Any]) -> SampleDataset:
        """Checked items decoded by :meth:`to_sample` under the bad-sample policy."""
        return SampleDataset(items, self.to_sample, self.sample_cost, self.on_bad_sample)

    def build_split(self, split: Split) -> Dataset | None:
        """The dataset of ``split``: every place read, checked, filtered by the policy, concatenated.

        A concatenation's parts each replace their own bad samples (the next good one of that place).
        """
        checks = self.read_split(split)  # read at the level of data.check
        if checks is None:
            return None
        kept, self.ledgers[split] = start_of_run(split, checks, self.on_bad_sample, self.root)
        parts = [self.sample_dataset(items) for items in kept]
        if not any(len(part) for part in parts):
            raise DataError.one(self.ledgers[split].where, "-", "rows", f"the {split} split is empty")
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def prepare_data(self) -> None:
        if self.synthesize and not self._synthetic_checked:
            use_synthetic(self.root, self.synthetic_recipe(), self.has_data())
            self._synthetic_checked = True

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", SPLITS):
            if split in self.datasets:
                continue
            dataset = self.build_split(split)
            if dataset is None:
                continue
            if len(dataset) == 0:
                raise DataError.one(self.root, "-", "rows", f"the {split} split is empty")
            self.datasets[split] = dataset

    def sample_costs(self, split: Split) -> list[float]:
        """Per-sample costs of ``split`` in dataset order (for :class:`DurationBucketSampler`)."""
        return dataset_costs(self.dataset(split))

    def dataset(self, split: Split) -> Dataset:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} split: {self.split_hint(split)} (and call setup)")
        return self.datasets[split]

    # ------------------------------------------------------------------ skipped samples

    def _loop(self) -> tuple[Split, Hashable] | None:
        """The split the trainer's running loop reads and a key of its epoch (a training epoch; one
        validation or test run: the trainer does not step during it), or None outside of a loop."""
        trainer = self.trainer
        stage = trainer.state.stage if trainer is not None else None
        if stage not in LOOP_SPLITS:
            return None
        if stage == RunningStage.TRAINING:
            return LOOP_SPLITS[stage], (stage.value, trainer.current_epoch)
        return LOOP_SPLITS[stage], (stage.value, trainer.current_epoch, trainer.global_step)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the batch's skip notes in the main process: log each, stop past ``max_bad_fraction``."""
        loop = self._loop()
        if loop is None or loop[0] not in self.ledgers:
            return batch
        ledger = self.ledgers[loop[0]]
        ledger.record(loop[1], skip_notes(getattr(batch, "metadata", None) or []))
        ledger.check(self.max_bad_fraction)  # also the rows dropped at start, before any decode
        return batch

    def skipped_in_epoch(self, split: str) -> int:
        """Samples of ``split`` skipped at decode time in the current epoch, in this process."""
        loop = self._loop()
        ledger = self.ledgers.get(split)
        return 0 if loop is None or ledger is None else ledger.count(loop[1])

    def check_skipped(self, split: str, skipped: int) -> None:
        """Apply ``max_bad_fraction`` to ``skipped`` decode-time skips of ``split`` (e.g. summed over ranks)."""
        ledger = self.ledgers.get(split)
        if ledger is not None:
            ledger.check(self.max_bad_fraction, skipped)

    def _collator(self) -> QwenVLCollator:
        if self.collator is None:
            raise RuntimeError(
                "the datamodule needs a collator (vlmlab.run.build passes the task's collator)"
            )
        return self.collator

    def _loader(self, dataset: Dataset, collate: Callable, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            # The loader's own generator: its worker base seed is not drawn from the global torch RNG.
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )

    def _distributed(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.world_size > 1 and uses_distributed_sampler(trainer)

    def _start_epoch(self, position: dict[str, Any] | None) -> int:
        if position is not None:
            return int(position["epoch"])
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _replicas(self) -> tuple[int, int]:
        kwargs = self.trainer.distributed_sampler_kwargs if self._distributed() else None
        return (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)

    def _shuffled_loader(self, position: dict[str, Any] | None) -> DataLoader:
        # Under DDP with use_distributed_sampler each rank takes its share (as Lightning's DistributedSampler).
        num_replicas, rank = self._replicas()
        dataset = self.dataset("train")
        if position is not None:
            mine = {"num_samples": len(dataset), "batch_size": self.batch_size, "num_replicas": num_replicas}
            for key, value in mine.items():
                if position.get(key, value) != value:
                    raise ValueError(
                        f"cannot resume the training epoch: the checkpoint was written with {key}="
                        f"{position[key]}, this run has {value}. Resume with the same data, data.batch_size "
                        "and devices, or start a new run from its weights (model.init_from=<checkpoint>)"
                    )
        seed = int(position.get("seed", self.seed)) if position is not None else self.seed
        sampler = ResumableSampler(
            len(dataset), shuffle=True, seed=seed, num_replicas=num_replicas, rank=rank
        )
        sampler.set_epoch(self._start_epoch(position))
        if position is not None:
            sampler.resume(int(position["epoch"]), int(position["batches"]) * self.batch_size)
        return self._loader(dataset, self._collator().train, batch_size=self.batch_size, sampler=sampler)

    def _bucketed_loader(self, batching: DurationBatching, position: dict[str, Any] | None) -> DataLoader:
        if self._distributed():
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
        sampler.set_epoch(self._start_epoch(position))
        if position is not None:
            # Raises on another seed, world size or packing (the position would mean other batches).
            sampler.load_state_dict(
                {
                    "epoch": position["epoch"],
                    "batches_yielded": position["batches"],
                    "num_replicas": position.get("num_replicas", sampler.num_replicas),
                    "num_batches": position.get("num_batches", len(sampler.packed_batches)),
                }
            )
        return self._loader(self.dataset("train"), self._collator().train, batch_sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        position, self._resume_position = self._resume_position, None
        if self.duration_batching is not None:
            return self._bucketed_loader(self.duration_batching, position)
        return self._shuffled_loader(position)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self._collator().eval, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self._collator().eval, batch_size=self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """The training position Lightning saves in checkpoints: ``{"train_position": {epoch, batches,
        ...}}``, ``batches`` being the batches of ``epoch`` already trained on (a finished epoch is
        saved as the next epoch at batch 0). Empty outside of fitting."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.train_dataloader is None:
            return {}
        batches, epoch = batches_done(trainer), trainer.current_epoch
        if batches >= trainer.num_training_batches:
            epoch, batches = epoch + 1, 0
        position: dict[str, Any] = {"epoch": epoch, "batches": batches, "seed": self.seed}
        sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
        if isinstance(sampler, DurationBucketSampler):
            position.update(num_replicas=sampler.num_replicas, num_batches=len(sampler.packed_batches))
        else:
            position.update(
                num_samples=len(self.datasets["train"]),
                batch_size=self.batch_size,
                num_replicas=self._replicas()[0],
            )
        return {"train_position": position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's training position for the next :meth:`train_dataloader`."""
        self._resume_position = dict(state_dict["train_position"]) if "train_position" in state_dict else None


class SplitFilesDataModule(VisionLanguageDataModule):
    """A source with one file (or glob, or folder) per split, relative to ``root`` unless absolute;
    None leaves a split out. The source implements :meth:`read_file`."""

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.files: dict[Split, str | None] = {"train": train_file, "val": val_file, "test": test_file}

    def split_path(self, split: Split) -> Path | None:
        name = self.files[split]
        if name is None:
            return None
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def read_file(self, path: Path, split: Split) -> list[Checked]:
        raise NotImplementedError

    def read_split(self, split: Split) -> list[Checked] | None:
        path = self.split_path(split)
        return None if path is None else self.read_file(path, split)

    def has_data(self) -> bool:
        train = self.split_path("train")
        return train is None or train.exists()
