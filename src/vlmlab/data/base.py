"""The LightningDataModule every data source extends: splits, validation at start, dataloaders,
optional duration bucketing of training batches, and the training position for exact resume."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from vlmlab.data.collate import QwenVLCollator
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sampler import DurationBatching, DurationBucketSampler, ResumableSampler

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
OnBadSample = Literal["raise", "skip"]
STAGE_SPLITS: dict[str, list[Split]] = {
    "fit": ["train", "val"],
    "validate": ["val"],
    "test": ["test"],
    "predict": ["test"],
}


def keep_good_rows(
    rows: list[Any], problems: list[DataProblem], on_bad_sample: OnBadSample, path: Path
) -> list[Any]:
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
        raise NotImplementedError(
            f"{type(dataset).__name__} has no sample_costs(): duration batching needs one"
        )
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
    seed: seeds the training order (epoch ``e`` shuffles with ``seed + e``) and the loaders' worker
        seeds; None: the process's torch seed (``seed_everything(cfg.seed)``: the run's ``seed``).

    Exact resume: Lightning stores :meth:`state_dict` (the epoch and how many training batches were
    trained on in it) in every checkpoint; after :meth:`load_state_dict` the next training loader
    yields the rest of that epoch, exactly the batches an uninterrupted run would have seen (for any
    ``num_workers``: the count comes from the trainer, not from how far the sampler ran ahead).
    Data loading never draws from the global RNG, so it does not shift the training RNG stream.
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
        seed: int | None = None,
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
        # torch.initial_seed() is up to 64 bits; seed + epoch must stay a valid generator seed.
        self.seed = (torch.initial_seed() if seed is None else seed) % 2**62
        self.datasets: dict[Split, Dataset] = {}
        self._resume_position: dict[str, Any] | None = None  # from load_state_dict, used once

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
            write_atomically(self.root, self.write_synthetic)

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "fit", ["train", "val", "test"]):
            if split in self.datasets:
                continue
            dataset = self.build_split(split)
            if dataset is None:
                continue
            if len(dataset) == 0:
                raise DataError.one(
                    self.split_path(split) or self.root, "-", "rows", f"the {split} split is empty"
                )
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

    def _generator(self) -> torch.Generator:
        # The loader's own generator: its worker base seed is not drawn from the global torch RNG.
        return torch.Generator().manual_seed(self.seed)

    def _loader(
        self, split: Split, batch_size: int, collate: Callable, sampler: Sampler | None = None
    ) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            generator=self._generator(),
        )

    def _distributed(self) -> bool:
        trainer = self.trainer
        return (
            trainer is not None
            and trainer.world_size > 1
            and trainer._accelerator_connector.use_distributed_sampler
        )

    def _start_epoch(self, position: dict[str, Any] | None) -> int:
        if position is not None:
            return int(position["epoch"])
        return self.trainer.current_epoch if self.trainer is not None else 0

    def _shuffled_loader(self, position: dict[str, Any] | None) -> DataLoader:
        # Under DDP with use_distributed_sampler each rank takes its share (as Lightning's DistributedSampler).
        kwargs = self.trainer.distributed_sampler_kwargs if self._distributed() else None
        num_replicas, rank = (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)
        dataset = self._dataset("train")
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
        return self._loader("train", self.batch_size, self._collator().train, sampler=sampler)

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
        return DataLoader(
            self._dataset("train"),
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self._collator().train,
            persistent_workers=self.num_workers > 0,
            generator=self._generator(),
        )

    def train_dataloader(self) -> DataLoader:
        position, self._resume_position = self._resume_position, None
        if self.duration_batching is not None:
            return self._bucketed_loader(self.duration_batching, position)
        return self._shuffled_loader(position)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, self._collator().eval)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, self._collator().eval)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # ----------------------------------------------------------------------------- resume

    def state_dict(self) -> dict[str, Any]:
        """The training position Lightning saves in checkpoints: ``{"train_position": {epoch, batches,
        ...}}``, ``batches`` being the batches of ``epoch`` already trained on (a finished epoch is
        saved as the next epoch at batch 0). Empty outside of fitting."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.train_dataloader is None:
            return {}
        # processed: batches whose step ran; Lightning's restore counts the same ones as done.
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = trainer.current_epoch
        if batches >= trainer.num_training_batches:
            epoch, batches = epoch + 1, 0
        position: dict[str, Any] = {"epoch": epoch, "batches": batches, "seed": self.seed}
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if isinstance(sampler, DurationBucketSampler):
            position.update(num_replicas=sampler.num_replicas, num_batches=len(sampler.packed_batches))
        else:
            kwargs = trainer.distributed_sampler_kwargs if self._distributed() else None
            position.update(
                num_samples=len(self.datasets["train"]),
                batch_size=self.batch_size,
                num_replicas=kwargs["num_replicas"] if kwargs else 1,
            )
        return {"train_position": position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the checkpoint's training position for the next :meth:`train_dataloader`."""
        self._resume_position = dict(state_dict["train_position"]) if "train_position" in state_dict else None


def write_atomically(root: Path, write: Callable[[Path], None]) -> None:
    """Write a folder with ``write(folder)`` so that no reader ever sees it half written.

    Jobs of a sweep may start at once and each write the same synthetic dataset on first use: each
    writes into its own temporary sibling and renames it into place; the first rename wins and the
    others discard their copy (the writers are deterministic, so the copies are equal).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(scratch)
        if root.exists() and not any(root.iterdir()):
            root.rmdir()  # an empty folder (e.g. made by hand) holds no data: take its place
        try:
            scratch.rename(root)
        except OSError:
            if not root.exists():
                raise
            log.info("%s exists already (written by another job meanwhile?): keeping it", root)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
