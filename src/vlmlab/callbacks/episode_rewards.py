"""Per-episode reward curves from ``trainer.predict`` of the reward classifier (the robot reward recipe)."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.loggers import TensorBoardLogger

log = logging.getLogger(__name__)


class EpisodeRewardWriter(BasePredictionWriter):
    """After ``trainer.predict``, for each episode ``k``:

    - ``episode_{k:06d}.jsonl``: one line a frame in frame order: ``episode_index``, ``frame_index``,
      ``id``, ``probabilities`` (C floats), ``predicted`` class, ``expected_reward``
      (``sum_c p_c * c / (C - 1)``, in [0, 1]), ``label`` (the true class, or null), ``task``;
    - ``episode_{k:06d}.png``: the expected reward over the episode's frames (with the true class
      scaled the same way when known) above the stacked class probabilities;

    and the figure is logged to TensorBoard as ``predict/episode_{k:06d}`` when a TensorBoardLogger is
    attached. Records are the module's ``predict_step`` outputs (``RewardClassifierModule``); with
    several processes they are gathered and written by rank 0.
    """

    def __init__(self, out_dir: str | Path, class_names: Sequence[str] | None = None):
        super().__init__(write_interval="epoch")
        self.out_dir = Path(out_dir)
        self.class_names = list(class_names) if class_names is not None else None
        self.written: list[Path] = []

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        records = [r for batch in _flat_batches(predictions) for r in batch]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[list[dict[str, Any]] | None] = [None] * trainer.world_size
            dist.all_gather_object(gathered, records)
            records = [r for part in gathered for r in (part or [])]
        if not trainer.is_global_zero:
            return
        names = self.class_names or getattr(pl_module, "class_names", None)
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        self.written = self.write(records, names, loggers, trainer.global_step)
        log.info("episode rewards of %d frames written to %s", len(records), self.out_dir)

    def write(
        self,
        records: Sequence[dict[str, Any]],
        class_names: Sequence[str] | None = None,
        loggers: Sequence[TensorBoardLogger] = (),
        step: int = 0,
    ) -> list[Path]:
        """Write the jsonl and PNG of every episode in ``records`` (and log the figures); return the paths."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for episode, frames in episodes_of(records).items():
            table = self.out_dir / f"episode_{episode:06d}.jsonl"
            with table.open("w") as handle:
                for record in frames:
                    handle.write(json.dumps(record) + "\n")
            plot = table.with_suffix(".png")
            figure = reward_figure(frames, class_names, episode)
            figure.savefig(plot)
            for logger in loggers:
                logger.experiment.add_figure(f"predict/{table.stem}", figure, step)
            written += [table, plot]
        return written


def episodes_of(records: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Records grouped by ``episode_index`` (ascending), each episode in ``frame_index`` order; a frame
    seen twice (a distributed sampler pads the ranks with repeats) is kept once."""
    episodes: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        episodes[int(record["episode_index"])][int(record["frame_index"])] = record
    return {e: [episodes[e][f] for f in sorted(episodes[e])] for e in sorted(episodes)}


def reward_figure(
    frames: Sequence[dict[str, Any]], class_names: Sequence[str] | None = None, episode: int | None = None
) -> matplotlib.figure.Figure:
    """Expected reward against frame index (top) and stacked class probabilities (bottom).

    frames: records of one episode in frame order, each with ``frame_index``, ``probabilities`` and
    ``expected_reward`` (and optionally ``label``).
    """
    index = np.array([int(f["frame_index"]) for f in frames])
    probabilities = np.array([f["probabilities"] for f in frames], dtype=np.float64)  # [T, C]
    classes = probabilities.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    # An Agg canvas on a pyplot-free Figure: no display and no global figure registry.
    figure = matplotlib.figure.Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    top.plot(index, [f["expected_reward"] for f in frames], marker="o", markersize=3, label="predicted")
    labels = [f.get("label") for f in frames]
    if classes > 1 and all(label is not None for label in labels):
        top.step(index, np.array(labels) / (classes - 1), where="mid", linestyle="--", label="true class")
    top.set_ylim(-0.05, 1.05)
    top.set_ylabel("expected reward")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"episode {episode}" if episode is not None else "episode")
    bottom.stackplot(index, probabilities.T, labels=names, step=None)
    bottom.set_ylim(0.0, 1.0)
    bottom.set_ylabel("class probability")
    bottom.set_xlabel("frame index")
    bottom.legend(loc="upper left", fontsize=7, ncols=min(classes, 6))
    figure.tight_layout()
    return figure


def _flat_batches(predictions: Sequence[Any]) -> list[list[dict[str, Any]]]:
    """Lightning gives a list of batch outputs, or a list of those per predict dataloader."""
    if (
        predictions
        and isinstance(predictions[0], list)
        and predictions[0]
        and isinstance(predictions[0][0], list)
    ):
        return [batch for loader in predictions for batch in loader]
    return list(predictions)


__all__ = ["EpisodeRewardWriter", "episodes_of", "reward_figure"]
