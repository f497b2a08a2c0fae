"""Random-number-generator states in checkpoints, so that a resumed run draws what the uninterrupted
run would have drawn (GRPO rollouts sample; dropout, random augmentations)."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def collect_rng_states() -> dict[str, Any]:
    """This process's python, numpy, torch (CPU) and, when initialised, CUDA generator states, as
    types ``torch.load(weights_only=True)`` accepts (numpy's key array as an int64 tensor)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": {"has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (from :func:`collect_rng_states`). CUDA states are restored
    only when the process sees as many devices as the run that saved them."""
    random.setstate(_as_python_state(states["python"]))
    keys = states["numpy"]["keys"].numpy().astype(np.uint32)
    gauss = states["numpy_gauss"]
    np.random.set_state(("MT19937", keys, states["numpy"]["pos"], gauss["has_gauss"], gauss["gauss"]))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning(
                "CUDA RNG states of %d devices saved, %d here: not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


def _as_python_state(state: Any) -> tuple:
    # random.setstate needs tuples; a checkpoint round trip may hand back lists.
    version, internal, gauss = state
    return version, tuple(internal), gauss


class RNGState(pl.Callback):
    """Save every rank's RNG states in each checkpoint; on resume, restore them just before the
    first training batch.

    Restoring there rather than at load time keeps whatever runs in between (optimizer setup, the
    data loaders starting, validation set-up) from shifting the streams: in an uninterrupted run
    nothing draws between the checkpoint (end of a batch) and the next batch's step either.
    Under DDP the states of all ranks are gathered (``state_dict`` is called on every rank when a
    checkpoint is written) and each rank gets its own back; with another world size every rank
    gets rank 0's, with a warning.
    """

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, states)
            return {"ranks": gathered}
        return {"ranks": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = list(state_dict["ranks"])

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        ranks, self._pending = self._pending, None
        if len(ranks) != trainer.world_size:
            log.warning(
                "RNG states of %d rank(s) in the checkpoint, %d now: every rank restores rank 0's",
                len(ranks),
                trainer.world_size,
            )
            restore_rng_states(ranks[0])
        else:
            restore_rng_states(ranks[trainer.global_rank])
