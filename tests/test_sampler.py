"""Tests for the duration-bucketing batch sampler, the vision-token estimate and the batch-size callback."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset

from vlmlab.callbacks.batch_stats import BatchSizeStats, batch_size_of
from vlmlab.data.collate import VisionLanguageBatch
from vlmlab.data.sampler import DurationBucketSampler, pack_by_duration


def total(durations: list[float] | np.ndarray, batch: list[int]) -> float:
    """A batch's duration summed in the sampler's order (sequential float adds, no compensation)."""
    acc = 0.0
    for i in batch:
        acc += float(durations[i])
    return acc


def sampler(durations: list[float], target: float, **kwargs: object) -> DurationBucketSampler:
    kwargs.setdefault("shuffle", False)
    return DurationBucketSampler(durations, target, **kwargs)


# ---------------------------------------------------------------- hand-computed packing

# Sorted by duration: index 2 (1 s), 4 (2 s), 3 (3 s), 0 (4 s), 1 (10 s).
HAND = [4.0, 10.0, 1.0, 3.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # 1+2=3 fits, +3 would be 6 > 5; 3 alone (+4 = 7); 4 alone (+10); 10 > 5 alone.
        ({}, [[2, 4], [3], [0], [1]]),
        # min 2 beats the target: [3 s, 4 s] = 7 s; the trailing [10 s] is merged into it.
        ({"min_batch_size": 2}, [[2, 4], [3, 0, 1]]),
        # ... unless that would exceed max: then it stays a short batch,
        ({"min_batch_size": 2, "max_batch_size": 2}, [[2, 4], [3, 0], [1]]),
        # ... or, with drop_last, is dropped.
        ({"min_batch_size": 2, "drop_last": True}, [[2, 4], [3, 0]]),
    ],
)
def test_hand_computed_packing(kwargs: dict, expected: list[list[int]]) -> None:
    s = sampler(HAND, 5.0, **kwargs)
    assert s.packed_batches == expected
    assert list(s) == expected
    assert s.batch_sizes() == [len(b) for b in expected]
    assert len(s) == len(expected)


def test_max_batch_size_caps_a_generous_target() -> None:
    assert sampler([5, 4, 3, 2, 1], 100.0, max_batch_size=2).packed_batches == [[4, 3], [2, 1], [0]]


def test_hand_computed_distribution_pads_and_drops() -> None:
    # 4 packed batches b0=[2,4] b1=[3] b2=[0] b3=[1] over 3 ranks, no shuffle.
    # Padded order b0 b1 b2 b3 b0 b1: rank r takes positions r, r+3.
    ranks = [list(sampler(HAND, 5.0, num_replicas=3, rank=r)) for r in range(3)]
    assert ranks == [[[2, 4], [1]], [[3], [2, 4]], [[0], [3]]]
    # drop_last: order truncated to b0 b1 b2.
    ranks = [list(sampler(HAND, 5.0, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert ranks == [[[2, 4]], [[3]], [[0]]]


def test_shuffle_permutes_batch_order_from_seed_plus_epoch() -> None:
    s = DurationBucketSampler(HAND, 5.0, shuffle=True, seed=7)
    s.set_epoch(3)
    generator = torch.Generator()
    generator.manual_seed(10)
    expected = [s.packed_batches[i] for i in torch.randperm(4, generator=generator).tolist()]
    assert list(s) == expected


def test_epochs_give_different_orders_of_the_same_batches() -> None:
    durations = [float(d) for d in range(1, 41)]  # 40 samples, target 10 -> ~20 batches
    s = DurationBucketSampler(durations, 10.0, seed=3)
    orders = []
    for epoch in range(5):
        s.set_epoch(epoch)
        orders.append(list(s))
    assert len({str(o) for o in orders}) == 5
    assert all(sorted(o) == sorted(s.packed_batches) for o in orders)
    s.set_epoch(2)
    assert list(s) == orders[2]


def test_single_over_long_sample_forms_its_own_batch() -> None:
    s = sampler([1.0, 50.0, 2.0, 60.0], 10.0)
    assert s.packed_batches == [[0, 2], [1], [3]]


def test_logs_settings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vlmlab.data.sampler"):
        sampler([10.0, 20.0, 30.0, 40.0], 50.0, num_replicas=2, rank=1)
    text = caplog.text
    # avg 25, expected batch size 50 / 25 = 2; batches [10,20] [30] [40] -> 2 per rank, 1 padded.
    assert (
        "DurationBucketSampler initialized: samples=4, target_duration=50.0, avg_sample_duration=25.0" in text
    )
    assert "expected_batch_size=2.0" in text
    assert "Duration range: min=10.0, max=40.0; 3 batches" in text
    assert "num_replicas=2, rank 1, 2 batches per rank (1 repeated as padding)" in text


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([], 10.0), {}, "non-empty"),
        (([1.0, float("nan")], 10.0), {}, "durations[1] = nan"),
        (([1.0, 2.0, -3.0], 10.0), {}, "durations[2] = -3.0"),
        (([1.0], 0.0), {}, "target_batch_duration"),
        (([1.0], 10.0), {"min_batch_size": 0}, "min_batch_size"),
        (([1.0], 10.0), {"min_batch_size": 3, "max_batch_size": 2}, "max_batch_size (2)"),
        (([1.0], 10.0), {"num_replicas": 2, "rank": 2}, "rank must be in [0, 1]"),
        (([1.0, 2.0], 10.0), {"num_replicas": 2, "rank": 0, "drop_last": True}, "no batches for rank 0"),
        (([1.0, 2.0], 10.0), {"min_batch_size": 3, "drop_last": True}, "no batches"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        DurationBucketSampler(*args, **kwargs)
    assert message in str(info.value)


def test_load_state_dict_refuses_a_foreign_state() -> None:
    s = sampler(HAND, 5.0)
    with pytest.raises(ValueError, match="seed=9"):
        s.load_state_dict({**s.state_dict(), "seed": 9})
    with pytest.raises(ValueError, match="batches_yielded=5"):
        s.load_state_dict({**s.state_dict(), "batches_yielded": 5})


# ---------------------------------------------------------------- properties

durations_st = st.lists(
    st.one_of(st.floats(0.0, 200.0, allow_nan=False), st.integers(0, 20).map(float)), min_size=1, max_size=60
)
settings_kw = dict(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw: st.DrawFn) -> dict:
    min_size = draw(st.integers(1, 4))
    max_size = draw(st.one_of(st.none(), st.integers(min_size, min_size + 6)))
    return {
        "durations": draw(durations_st),
        "target_batch_duration": draw(st.floats(1.0, 500.0)),
        "min_batch_size": min_size,
        "max_batch_size": max_size,
        "drop_last": draw(st.booleans()),
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
        "num_replicas": draw(st.integers(1, 4)),
    }


def build_all_ranks(cfg: dict) -> list[DurationBucketSampler] | None:
    """One sampler per rank, or None when the config rightly raises (drop_last leaves a rank nothing)."""
    packed = pack_by_duration(
        np.asarray(cfg["durations"]),
        cfg["target_batch_duration"],
        cfg["max_batch_size"],
        cfg["min_batch_size"],
        cfg["drop_last"],
    )
    if cfg["drop_last"] and len(packed) < cfg["num_replicas"]:
        with pytest.raises(ValueError, match="no batches"):
            DurationBucketSampler(**cfg, rank=0)
        return None
    return [DurationBucketSampler(**cfg, rank=r) for r in range(cfg["num_replicas"])]


@given(cfg=configs())
@settings(**settings_kw)
def test_packing_respects_target_min_max_and_is_greedy(cfg: dict) -> None:
    samplers = build_all_ranks(cfg)
    if samplers is None:
        return
    d, target = cfg["durations"], cfg["target_batch_duration"]
    lo, hi = cfg["min_batch_size"], cfg["max_batch_size"]
    packed = samplers[0].packed_batches
    flat = [i for b in packed for i in b]
    assert len(flat) == len(set(flat))  # a partition
    assert [d[i] for i in flat] == sorted(d[i] for i in flat)  # packed in ascending duration
    if not cfg["drop_last"]:
        assert sorted(flat) == list(range(len(d)))
    else:
        # Only the trailing (longest) samples, fewer than min, may be dropped.
        missing = sorted(set(range(len(d))) - set(flat))
        assert len(missing) < lo
        assert all(d[m] >= d[i] for m in missing for i in flat)
    for k, batch in enumerate(packed):
        last = k == len(packed) - 1
        assert hi is None or len(batch) <= hi
        if not last or cfg["drop_last"]:
            assert len(batch) >= lo
        # Over the target only: a batch forced up to min (incl. a single over-long sample at min=1),
        # or the final batch after the documented trailing merge.
        if total(d, batch) > target:
            assert len(batch) <= lo or last
        if not last:
            # Greedy: the next batch's first (shortest) sample did not fit.
            nxt = d[packed[k + 1][0]]
            assert len(batch) == hi or (len(batch) >= lo and total(d, batch) + nxt > target)
    if lo == 1:  # nothing is ever merged: the target holds but for single over-long samples
        for batch in packed:
            assert total(d, batch) <= target or len(batch) == 1


@given(cfg=configs(), epoch=st.integers(0, 5))
@settings(**settings_kw)
def test_ranks_get_equal_counts_disjoint_samples_and_padding_only_repeats(cfg: dict, epoch: int) -> None:
    samplers = build_all_ranks(cfg)
    if samplers is None:
        return
    for s in samplers:
        s.set_epoch(epoch)
    per_rank = [list(s) for s in samplers]
    n_ranks, packed = cfg["num_replicas"], samplers[0].packed_batches
    n = len(packed)
    # Equal batch counts on every rank, equal to len().
    assert {len(batches) for batches in per_rank} == {len(samplers[0])}
    assert all(
        s.batch_sizes() == [len(b) for b in batches] for s, batches in zip(samplers, per_rank, strict=True)
    )
    yielded = [tuple(b) for batches in per_rank for b in batches]
    assert set(yielded) <= {tuple(b) for b in packed}
    # The epoch order, computed independently: randperm(seed + epoch) or packing order.
    if cfg["shuffle"]:
        generator = torch.Generator()
        generator.manual_seed(cfg["seed"] + epoch)
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = list(range(n))
    if cfg["drop_last"]:
        assert len(yielded) == n - n % n_ranks
        assert len(set(yielded)) == len(yielded)  # nothing repeats
        assert set(yielded) == {tuple(packed[i]) for i in order[: len(yielded)]}
    else:
        pad = -n % n_ranks
        assert len(yielded) == n + pad
        assert set(yielded) == {tuple(b) for b in packed}  # every sample covered
        padded = Counter(tuple(packed[i]) for i in (order * n_ranks)[:pad])
        extra = Counter(yielded) - Counter(tuple(b) for b in packed)
        assert extra == padded  # repeats come only from the padding
    # Each sample appears exactly once beyond the padding repeats: disjoint across ranks.
    counts = Counter(i for b in set(yielded) for i in b)
    assert set(counts.values()) <= {1}


@given(cfg=configs(), epoch=st.integers(0, 5), data=st.data())
@settings(**settings_kw)
def test_deterministic_and_resumable(cfg: dict, epoch: int, data: st.DataObject) -> None:
    samplers = build_all_ranks(cfg)
    if samplers is None:
        return
    rank = data.draw(st.integers(0, cfg["num_replicas"] - 1))
    first = samplers[rank]
    first.set_epoch(epoch)
    twin = DurationBucketSampler(**cfg, rank=rank)
    twin.set_epoch(epoch)
    full = list(first)
    assert list(twin) == full  # deterministic for (seed, epoch)
    # Iterate k batches, save, restore into a fresh sampler: the rest follows.
    k = data.draw(st.integers(0, len(full)))
    first.set_epoch(epoch)
    iterator = iter(first)
    seen = [next(iterator) for _ in range(k)]
    state = first.state_dict()
    assert state["epoch"] == epoch and state["batches_yielded"] == k
    resumed = DurationBucketSampler(**cfg, rank=rank)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # what a trainer does on resume: same epoch keeps the position
    assert resumed.state_dict() == state
    assert seen + list(resumed) == full
    assert list(resumed) == full  # the following iteration is a whole epoch again


def test_set_epoch_to_another_epoch_discards_the_resume_position() -> None:
    s = DurationBucketSampler([float(i) for i in range(1, 20)], 6.0, seed=1)
    s.load_state_dict({"epoch": 2, "batches_yielded": 3})
    s.set_epoch(3)
    assert len(list(s)) == len(s)


# ---------------------------------------------------------------- batch-size callback


class Numbers(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def collate(indices: list[int]) -> VisionLanguageBatch:
    return VisionLanguageBatch(
        ids=[str(i) for i in indices], inputs={"x": torch.tensor(indices, dtype=torch.float32)}
    )


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch: VisionLanguageBatch, batch_idx: int) -> torch.Tensor:
        return ((self.w - batch.inputs["x"]) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_batch_size_stats_logs_windows(caplog: pytest.LogCaptureFixture) -> None:
    # Durations 1..12, target 10: [1,2,3,4] [5] [6] [7] [8] [9] [10] [11] [12] -> sizes 4,1,1,...
    durations = [float(d) for d in range(1, 13)]
    s = DurationBucketSampler(durations, 10.0, shuffle=False)
    sizes = s.batch_sizes()
    assert sizes == [4, 1, 1, 1, 1, 1, 1, 1, 1]
    stats = BatchSizeStats(logging_interval=3)
    trainer = pl.Trainer(
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        callbacks=[stats],
    )
    loader = DataLoader(Numbers(len(durations)), batch_sampler=s, collate_fn=collate)
    with caplog.at_level(logging.INFO, logger="vlmlab.callbacks.batch_stats"):
        trainer.fit(Tiny(), loader)
    # Windows of 3 batches: (4, 1, 1) then (1, 1, 1).
    assert stats.history == [
        {"step": 3.0, "avg": 2.0, "min": 1.0, "max": 4.0},
        {"step": 6.0, "avg": 1.0, "min": 1.0, "max": 1.0},
    ]
    assert "Step 3: batch_size avg=2.0, min=1, max=4" in caplog.text
    assert float(trainer.callback_metrics["train/batch_size/avg"]) == 1.0
    assert float(trainer.callback_metrics["train/batch_size/max"]) == 1.0


def test_batch_size_of_handles_tensors_and_collated_lists() -> None:
    x = torch.zeros(5, 3)
    assert batch_size_of(x) == 5
    assert batch_size_of([x, torch.zeros(5)]) == 5
    assert batch_size_of({"x": x}) == 5
    assert batch_size_of(VisionLanguageBatch(ids=["a", "b"])) == 2
    with pytest.raises(ValueError, match="logging_interval"):
        BatchSizeStats(logging_interval=0)


def test_replicas_and_rank_default_from_torch_distributed(tmp_path: Path) -> None:
    import torch.distributed as dist

    assert (sampler(HAND, 5.0).num_replicas, sampler(HAND, 5.0).rank) == (1, 0)  # not initialised
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        s = sampler(HAND, 5.0)
        assert (s.num_replicas, s.rank) == (1, 0)
        assert sampler(HAND, 5.0, num_replicas=3, rank=2).num_replicas == 3  # explicit wins
    finally:
        dist.destroy_process_group()


def test_lightning_sets_the_epoch_of_the_duration_sampler() -> None:
    from lightning_fabric.utilities.data import _set_sampler_epoch

    s = DurationBucketSampler([float(i) for i in range(1, 20)], 6.0, seed=1)
    loader = DataLoader(list(range(19)), batch_sampler=s)
    _set_sampler_epoch(loader, 3)  # what Lightning calls each epoch: it looks at batch_sampler.sampler
    assert s.epoch == 3


def test_resume_position_survives_an_iterator_that_never_started() -> None:
    # torch's multi-worker iterator calls iter() on the batch sampler twice and drops the first one.
    s = DurationBucketSampler([float(i) for i in range(1, 20)], 6.0, seed=1)
    full = list(s)
    s.load_state_dict({"epoch": 0, "batches_yielded": 2})
    iter(s)
    assert list(s) == full[2:]
    assert list(s) == full
