"""Episode-disjoint train/val/test splits of a LeRobot dataset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmlab.data.base import Split

__all__ = ["EpisodeSpec", "episode_spec", "split_episodes"]

EpisodeSpec = Sequence[int] | float | None


def episode_spec(spec: Any) -> EpisodeSpec:
    """A split's episodes as plain Python (Hydra gives a ListConfig): a list of ints, a number or None."""
    if spec is None or isinstance(spec, int | float):
        return spec
    return [int(e) for e in spec]


def split_episodes(
    episodes: Sequence[int], val_episodes: EpisodeSpec, test_episodes: EpisodeSpec, seed: int = 0
) -> dict[Split, list[int]]:
    """Episode-disjoint splits: frames of one episode never appear in two splits.

    Each of val/test is a list of episode indices, or a fraction in [0, 1) of the episodes drawn
    by a seeded shuffle (``round(f * E)``, at least 1 when f > 0), or None/0 for no split.
    Train is every other episode and must keep at least one.
    """
    all_eps = sorted(int(e) for e in episodes)
    order = [all_eps[i] for i in np.random.default_rng(seed).permutation(len(all_eps))]
    chosen: dict[Split, list[int]] = {}
    for split, spec in (("test", test_episodes), ("val", val_episodes)):
        if spec is None or (isinstance(spec, int | float) and not isinstance(spec, bool) and spec == 0):
            chosen[split] = []
        elif isinstance(spec, float):
            if not 0.0 < spec < 1.0:
                raise ValueError(f"data.{split}_episodes={spec}: a fraction must be in [0, 1)")
            taken = {e for eps in chosen.values() for e in eps}
            free = [e for e in order if e not in taken]
            count = min(len(free), max(1, round(spec * len(all_eps))))
            chosen[split] = sorted(free[:count])
        elif isinstance(spec, Sequence) and not isinstance(spec, str):
            listed = [int(e) for e in spec]
            unknown = sorted(set(listed) - set(all_eps))
            if unknown:
                raise ValueError(
                    f"data.{split}_episodes: episodes {unknown} are not in the dataset ({len(all_eps)} episodes)"
                )
            chosen[split] = sorted(set(listed))
        else:
            raise ValueError(
                f"data.{split}_episodes={spec!r}: give a fraction (0.2), a list of episode indices ([3, 7]) or null"
            )
    overlap = sorted(set(chosen["val"]) & set(chosen["test"]))
    if overlap:
        raise ValueError(f"episodes {overlap} are in both data.val_episodes and data.test_episodes")
    held_out = set(chosen["val"]) | set(chosen["test"])
    train = [e for e in all_eps if e not in held_out]
    if not train:
        raise ValueError(f"no episode left for training: val {chosen['val']}, test {chosen['test']}")
    return {"train": train, "val": chosen["val"], "test": chosen["test"]}
