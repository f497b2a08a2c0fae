"""Duration-bucketing batch sampler (the grounding recipe, "Duration-Based Dynamic Batching").

Samples are sorted by duration and packed greedily into batches whose total duration stays within
``target_batch_duration``, so every batch costs about the same GPU memory however long its videos
are: many short clips or a few long ones. The batches are fixed once (they do not depend on the
epoch); each epoch shuffles only their *order*, then deals them out to the distributed ranks.

The sampler is cost-agnostic: ``durations`` is any per-sample cost that adds up within a batch.
Seconds of video for mp4 sources; for volumes and images, where the memory follows the number of
vision tokens, each sample's vision tokens (:class:`vlmlab.models.facts.VisionGeometry`) and a token
budget as the target.

Packing rules (``min``/``max`` are ``min_batch_size``/``max_batch_size``):

* samples are taken in ascending duration (ties by index); a sample joins the open batch unless
  the batch already holds ``max`` samples, or it holds at least ``min`` samples and the sample
  would take its total over the target; then the batch is closed and the sample opens a new one;
* so a batch exceeds the target only (a) when it is a single sample longer than the target
  (``min = 1``), (b) when reaching ``min`` samples took it over (it then holds exactly ``min``),
  or (c) the merged trailing batch below;
* the trailing batch may hold fewer than ``min`` samples (the data ran out). With
  ``drop_last=False`` it is merged into the previous batch when the merged batch holds at most
  ``max`` samples (the merged batch may exceed the target: case (c)), else it is kept as a short
  batch, so every sample is covered. With ``drop_last=True`` it is dropped.

Distribution (``num_replicas`` ranks, like ``torch.utils.data.DistributedSampler`` but per batch):
the epoch order of the ``n`` batches is ``randperm(n)`` from a generator seeded with
``seed + epoch`` (identical on every rank), or packing order when ``shuffle=False``. Rank ``r``
takes positions ``r, r + R, r + 2R, ...``, so ranks get disjoint samples and the same number of
batches (DDP cannot hang on a rank that ran out). When ``n`` is not a multiple of ``R``:
``drop_last=False`` pads the order by repeating its first ``-n % R`` batches (those samples are
seen twice that epoch); ``drop_last=True`` drops its last ``n % R`` batches (different ones each
shuffled epoch).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "DurationBatching",
    "DurationBucketSampler",
    "ResumableSampler",
    "epoch_indices",
    "pack_by_duration",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DurationBatching:
    """``data.duration_batching``: the sampler's settings (the grounding recipe's ``duration_batching:``).

    The per-sample cost comes from the data source: seconds of video for video sources, estimated
    vision tokens for volumes and images (so ``target_batch_duration`` is then a token budget).
    """

    target_batch_duration: float
    max_batch_size: int | None = None
    min_batch_size: int = 1
    drop_last: bool = False
    shuffle: bool = True
    seed: int = 0


def pack_by_duration(
    durations: np.ndarray,
    target_batch_duration: float,
    max_batch_size: int | None = None,
    min_batch_size: int = 1,
    drop_last: bool = False,
) -> list[list[int]]:
    """Greedy packing of ``durations`` [N] into batches of indices, by the rules in the module docstring.

    Returns the batches in packing order (ascending duration); each batch lists its indices in
    ascending duration. Arguments are assumed valid (the sampler checks them).
    """
    order = np.argsort(durations, kind="stable")  # stable: equal durations keep index order
    batches: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for index in order.tolist():
        cost = float(durations[index])
        full = max_batch_size is not None and len(current) >= max_batch_size
        over = len(current) >= min_batch_size and total + cost > target_batch_duration
        if current and (full or over):
            batches.append(current)
            current, total = [], 0.0
        current.append(index)
        total += cost
    if not current:
        return batches
    if len(current) >= min_batch_size:
        batches.append(current)
    elif not drop_last:
        # Below min: merge rather than leave a tiny batch, but never past max_batch_size.
        if batches and (max_batch_size is None or len(batches[-1]) + len(current) <= max_batch_size):
            batches[-1].extend(current)
        else:
            batches.append(current)
    return batches


def _resolve_distributed(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank}")
    return num_replicas, rank


class DurationBucketSampler(Sampler[list[int]]):
    """Batch sampler packing samples by duration (or any additive cost) up to a per-batch target.

    Pass it as ``DataLoader(dataset, batch_sampler=sampler)``. Packing, shuffling and the
    distributed split are described in the module docstring.

    durations: per-sample cost [N], finite and >= 0 (seconds, or vision tokens).
    target_batch_duration: the budget a batch's total stays within (see the exceptions).
    max_batch_size / min_batch_size: hard bounds on samples per batch (min wins over the target).
    drop_last: drop the short trailing batch and the batches that do not divide among the ranks.
    shuffle / seed: the batch order of epoch ``e`` is a permutation seeded by ``seed + e``.
    num_replicas / rank: default to ``torch.distributed`` when initialised, else 1 / 0. Shards
    by itself: under Lightning set ``Trainer(use_distributed_sampler=False)``.

    Resumable: :meth:`state_dict` holds the epoch and the batches this rank already yielded;
    after :meth:`load_state_dict` the next iteration continues that epoch with the next batch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        target_batch_duration: float,
        max_batch_size: int | None = None,
        min_batch_size: int = 1,
        drop_last: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        costs = np.asarray(durations, dtype=np.float64)
        if costs.ndim != 1 or costs.size == 0:
            raise ValueError(f"durations must be a non-empty 1-D sequence, got shape {costs.shape}")
        bad = np.flatnonzero(~np.isfinite(costs) | (costs < 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"durations[{i}] = {costs[i]}: every duration (per-sample cost) must be finite and >= 0 "
                f"({bad.size} bad value(s))"
            )
        if not (math.isfinite(target_batch_duration) and target_batch_duration > 0):
            raise ValueError(f"target_batch_duration must be finite and > 0, got {target_batch_duration}")
        if min_batch_size < 1:
            raise ValueError(f"min_batch_size must be >= 1, got {min_batch_size}")
        if max_batch_size is not None and max_batch_size < min_batch_size:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) must be >= min_batch_size ({min_batch_size})"
            )
        self.durations = costs
        self.target_batch_duration = float(target_batch_duration)
        self.max_batch_size = max_batch_size
        self.min_batch_size = min_batch_size
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas, self.rank = _resolve_distributed(num_replicas, rank)
        self.epoch = 0
        self._batches = pack_by_duration(
            costs, self.target_batch_duration, max_batch_size, min_batch_size, drop_last
        )
        n, replicas = len(self._batches), self.num_replicas
        self._per_rank = n // replicas if drop_last else -(-n // replicas)
        if self._per_rank == 0:
            raise ValueError(
                f"no batches for rank {self.rank}: {costs.size} samples packed into {n} batch(es) of at least "
                f"min_batch_size={min_batch_size} for {replicas} replica(s) with drop_last=True"
            )
        # Resume bookkeeping: where the next __iter__ starts, and how far the current one got.
        self._resume_from = 0
        self._yielded = 0
        self._log_settings()

    def _log_settings(self) -> None:
        n_samples, batches = self.durations.size, self._batches
        mean = float(self.durations.mean())
        expected = self.target_batch_duration / mean if mean > 0 else math.inf
        log.info(
            "DurationBucketSampler initialized: samples=%d, target_duration=%.1f, avg_sample_duration=%.1f, "
            "expected_batch_size=%.1f",
            n_samples,
            self.target_batch_duration,
            mean,
            expected,
        )
        sizes = [len(b) for b in batches]
        log.info(
            "Duration range: min=%.1f, max=%.1f; %d batches (size mean=%.1f, min=%d, max=%d), "
            "%d sample(s) longer than the target, %d sample(s) dropped",
            float(self.durations.min()),
            float(self.durations.max()),
            len(batches),
            sum(sizes) / len(sizes),
            min(sizes),
            max(sizes),
            int((self.durations > self.target_batch_duration).sum()),
            n_samples - sum(sizes),
        )
        remainder = self._per_rank * self.num_replicas - len(batches)
        log.info(
            "Distributed: num_replicas=%d, rank %d, %d batches per rank (%s)",
            self.num_replicas,
            self.rank,
            self._per_rank,
            f"{remainder} repeated as padding"
            if remainder > 0
            else f"{-remainder} dropped"
            if remainder < 0
            else "no padding",
        )

    @property
    def packed_batches(self) -> list[list[int]]:
        """All ranks' batches in packing order (ascending duration), before shuffling and padding."""
        return [list(b) for b in self._batches]

    @property
    def sampler(self) -> DurationBucketSampler:
        """Itself. Lightning calls ``set_epoch`` each epoch on ``loader.sampler`` and on
        ``loader.batch_sampler.sampler``, never on the batch sampler: without this every epoch would
        repeat epoch 0's order."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's batch order; a pending resume position is kept only for the same epoch."""
        if epoch != self.epoch:
            self._resume_from = 0
            self._yielded = 0
        self.epoch = epoch

    def epoch_order(self, epoch: int | None = None) -> list[int]:
        """Positions into :attr:`packed_batches` for all ranks in dealing order (padded or truncated
        to a multiple of ``num_replicas``); rank ``r`` takes ``[r::num_replicas]``."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self._batches)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        total = self._per_rank * self.num_replicas
        if total <= n:
            return order[:total]
        # Padding may exceed n when there are fewer batches than ranks: repeat the order as needed.
        return (order * math.ceil(total / n))[:total]

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), in yield order."""
        order = self.epoch_order(epoch)[self.rank :: self.num_replicas]
        return [list(self._batches[i]) for i in order]

    def batch_sizes(self) -> list[int]:
        """Sizes of this rank's batches for the current epoch, in yield order."""
        return [len(b) for b in self.rank_batches()]

    def __iter__(self) -> Iterator[list[int]]:
        # Not a generator function: the order and the count are set when iteration starts, not at the
        # first next(). The resume position is cleared only by the first next(): torch's worker
        # iterator calls iter() twice and throws the first iterator away unused.
        start = self._resume_from
        self._yielded = start
        return self._yield_from(self.rank_batches()[start:])

    def _yield_from(self, batches: list[list[int]]) -> Iterator[list[int]]:
        self._resume_from = 0
        for batch in batches:
            self._yielded += 1
            yield batch

    def __len__(self) -> int:
        """Batches per rank in a full epoch (the same on every rank and every epoch)."""
        return self._per_rank

    def state_dict(self) -> dict[str, Any]:
        """Epoch and the number of batches this rank already yielded in it, plus what must match on load.

        With DataLoader workers the sampler runs ahead of training by the prefetched batches;
        overwrite ``batches_yielded`` with the trainer's count of consumed batches when that matters.
        """
        return {
            "epoch": self.epoch,
            "batches_yielded": self._yielded,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "num_batches": len(self._batches),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields the rest of epoch ``state["epoch"]``.

        Raises ValueError when the state comes from a sampler with another seed, world size or
        packing (a silent mismatch would repeat and skip samples).
        """
        for key in ("seed", "num_replicas", "num_batches"):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise ValueError(f"sampler state mismatch: {key}={state[key]} in the state, {mine} here")
        epoch, done = int(state["epoch"]), int(state["batches_yielded"])
        if not 0 <= done <= self._per_rank:
            raise ValueError(f"batches_yielded={done} is outside [0, {self._per_rank}]")
        self.epoch = epoch
        self._resume_from = done
        self._yielded = done


def epoch_indices(
    num_samples: int,
    epoch: int,
    seed: int,
    shuffle: bool = True,
    num_replicas: int = 1,
    rank: int = 0,
    drop_last: bool = False,
) -> list[int]:
    """Rank ``rank``'s sample order of ``epoch``: exactly ``torch.utils.data.DistributedSampler``'s.

    The order of all ``num_samples`` is ``randperm`` from a generator seeded with ``seed + epoch``
    (or ``0..n-1`` without shuffle), padded by repeating its head (or, with ``drop_last``, truncated)
    to a multiple of ``num_replicas``; rank ``r`` takes positions ``r, r + R, r + 2R, ...``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank}")
    if drop_last and num_samples % num_replicas:
        per_rank = math.ceil((num_samples - num_replicas) / num_replicas)
    else:
        per_rank = math.ceil(num_samples / num_replicas)
    total = per_rank * num_replicas
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(num_samples, generator=generator).tolist()
    else:
        order = list(range(num_samples))
    if total > num_samples:
        order = (order * math.ceil(total / num_samples))[:total]
    return order[:total][rank:total:num_replicas]


class ResumableSampler(DistributedSampler):
    """A shuffling sampler that can continue an epoch where a checkpoint left it.

    The order is :func:`epoch_indices` (``DistributedSampler``'s, so it is one: Lightning does not
    replace it under DDP). :meth:`resume` makes the next iteration of that epoch skip the samples
    already trained on; ``len()`` stays the whole epoch's (Lightning counts the skipped batches as done).

    num_samples: dataset size. num_replicas / rank: explicit (1 / 0 on one process).
    """

    def __init__(
        self,
        num_samples: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        super().__init__(
            range(num_samples),
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self._skip = 0  # samples the next iteration of self.epoch skips

    def resume(self, epoch: int, samples_done: int) -> None:
        """The next iteration yields epoch ``epoch`` from its ``samples_done``-th sample (of this rank)."""
        if not 0 <= samples_done <= self.num_samples:
            raise ValueError(f"samples_done={samples_done} is outside [0, {self.num_samples}]")
        self.epoch = epoch
        self._skip = samples_done

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch; a pending resume position is kept only for the same epoch."""
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        # The order is fixed when iteration starts; the skip is cleared by the first next() (torch's
        # worker iterator calls iter() twice and throws the first iterator away unused).
        order = epoch_indices(
            len(self.dataset),
            self.epoch,
            self.seed,
            self.shuffle,
            self.num_replicas,
            self.rank,
            self.drop_last,
        )
        return self._yield_from(order, self._skip)

    def _yield_from(self, order: list[int], start: int) -> Iterator[int]:
        self._skip = 0
        yield from order[start:]
