"""Predictions as pictures in TensorBoard: boxes on MRI frames (BraTS), spans on a timeline (VTG).

Two pure drawing functions, each ``draw(frames, prediction, target, title="") -> Figure`` with
``frames`` the uint8 video ``[T, H, W, 3]`` the model saw, ``prediction`` its text and ``target``
the sample's target; predictions are read with the reward's own parser, so a picture shows exactly
what the reward scored, and no text (junk included) makes them raise. :class:`PredictionPictures`
logs one figure per sample after validation / test; ``draw`` is chosen in config::

    callbacks:
      prediction_pictures:
        _target_: vlmlab.callbacks.pictures.PredictionPictures
        draw: {_target_: vlmlab.callbacks.pictures.draw_volume_boxes, _partial_: true}
        num_samples: 4

Figures are plain ``matplotlib.figure.Figure`` on an Agg canvas (no pyplot: no display, no global
figure registry).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.figure
import numpy as np
import pytorch_lightning as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from pytorch_lightning.loggers import TensorBoardLogger

from vlmlab.tasks.brats_detection import answer_box, box_iou_3d, parse_answer
from vlmlab.tasks.coords import FrameGeometry, frame_to_slice
from vlmlab.tasks.grounding import predicted_span, span_iou, temporal_format
from vlmlab.tasks.numbers import finite_number

log = logging.getLogger(__name__)

__all__ = [
    "PREDICTED_COLOUR",
    "TRUE_COLOUR",
    "PredictionPictures",
    "draw_temporal_spans",
    "draw_volume_boxes",
    "frames_around",
    "predicted_box",
    "sample_video",
]

TRUE_COLOUR = "limegreen"
PREDICTED_COLOUR = "red"

Draw = Callable[..., matplotlib.figure.Figure]


def _figure(width: float, height: float) -> matplotlib.figure.Figure:
    figure = matplotlib.figure.Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _check_video(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames uint8 [T, H, W, 3], got shape {frames.shape}")
    return frames


# ---------------------------------------------------------------------------- volumes (BraTS)


def predicted_box(prediction: str) -> tuple[list[float] | None, float | None]:
    """The predicted ``bbox_3d`` (6 finite numbers, ``x1 <= x2, y1 <= y2, z1 <= z2``) and ``peak_slice``,
    each None when missing or malformed; read as the BraTS reward reads them."""
    answer = parse_answer(prediction if isinstance(prediction, str) else "")
    if answer is None:
        return None, None
    return answer_box(answer), finite_number(answer.get("peak_slice"))


def frames_around(peak: float, num_frames: int, count: int) -> list[int]:
    """``count`` consecutive frame indices of ``0..num_frames-1`` centred on ``peak`` (shifted to fit)."""
    count = max(1, min(count, num_frames))
    centre = min(max(round(peak), 0), num_frames - 1)
    start = min(max(centre - count // 2, 0), num_frames - count)
    return list(range(start, start + count))


def _overlaps(frame: int, box: Sequence[float]) -> bool:
    """Frame ``frame`` (covering ``[f, f + 1)``) meets the box's z-range ``[z1, z2)`` (edge coordinates)."""
    return frame < box[5] and frame + 1 > box[2]


def _rectangle(
    box: Sequence[float], offset: tuple[float, float], limits: tuple[float, float], **style: Any
) -> Rectangle:
    """The box's x-y rectangle moved by ``offset``; coordinates clipped just outside the frame so that a
    wild prediction (1e300) cannot upset the renderer, while in-frame boxes keep their exact edges."""
    width, height = limits
    x1, x2 = (float(np.clip(v + offset[0], -1.0, width + 1.0)) for v in (box[0], box[3]))
    y1, y2 = (float(np.clip(v + offset[1], -1.0, height + 1.0)) for v in (box[1], box[4]))
    return Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **style)


def draw_volume_boxes(
    frames: np.ndarray,
    prediction: str,
    target: Mapping[str, Any],
    title: str = "",
    num_frames: int = 5,
    modality: int = 0,
) -> matplotlib.figure.Figure:
    """Frames around the true peak slice with the true box (green) and the predicted box (red, dashed).

    frames: the model's video uint8 ``[T, H, W, 3]``. target: a BraTS target (``bbox_3d`` frame-edge
    box ``[x1, y1, z1, x2, y2, z2]`` of modality 0, ``peak_slice`` a frame of modality 0, ``geometry`` a
    :meth:`FrameGeometry.to_dict`; without it the video is one modality, one frame per slice).
    num_frames: frames shown (one axes each), centred on the true peak. modality: whose frames are
    shown: in ``sequence`` its run of frames, in ``tiled`` the whole frame with the boxes on its tile.
    A box is drawn on every shown frame its z-range meets. The suptitle gives the 3D IoU (the reward's
    :func:`box_iou_3d`), or says the prediction is unparsable.
    """
    frames = _check_video(frames)
    geometry = (
        FrameGeometry.from_dict(target["geometry"])
        if target.get("geometry") is not None
        else FrameGeometry(tuple(frames.shape[:3]))
    )
    expected = (geometry.total_frames, *geometry.frame_shape)
    if tuple(frames.shape[:3]) != expected:
        raise ValueError(
            f"frames of shape {frames.shape} do not match the target's geometry [T, H, W] {expected}"
        )
    true_box = [float(v) for v in target["bbox_3d"]]
    true_peak = int(target["peak_slice"])
    pred_box, pred_peak = predicted_box(prediction)
    ox, oy, oz = geometry.offsets(modality)
    height, width = frames.shape[1:3]
    shown = frames_around(true_peak, geometry.frames_per_modality, num_frames)

    figure = _figure(2.2 * len(shown) + 0.4, 3.0)
    for k, f in enumerate(shown):
        axes = figure.add_subplot(1, len(shown), k + 1)
        # extent in edge coordinates: pixel (i, j) covers [i, i + 1) x [j, j + 1), as the boxes do.
        axes.imshow(frames[f + int(oz)], extent=(0, width, height, 0), interpolation="nearest")
        for box, colour, style in ((true_box, TRUE_COLOUR, "-"), (pred_box, PREDICTED_COLOUR, "--")):
            if box is not None and _overlaps(f, box):
                axes.add_patch(
                    _rectangle(
                        box, (ox, oy), (width, height), edgecolor=colour, linestyle=style, linewidth=1.5
                    )
                )
        marks = ("true peak " if f == true_peak else "") + (
            "pred. peak" if pred_peak is not None and round(pred_peak) == f else ""
        )
        axes.set_title(
            f"frame {f} (slice {frame_to_slice(f, geometry):.0f})" + (f"\n{marks.strip()}" if marks else ""),
            fontsize=8,
        )
        axes.set_xlim(0, width)
        axes.set_ylim(height, 0)
        axes.set_xticks([])
        axes.set_yticks([])
    result = "prediction unparsable" if pred_box is None else f"3D IoU {box_iou_3d(pred_box, true_box):.2f}"
    figure.suptitle(f"{title}  {result}".strip(), fontsize=9)
    figure.legend(
        handles=[
            Line2D([], [], color=TRUE_COLOUR, label="true"),
            Line2D([], [], color=PREDICTED_COLOUR, linestyle="--", label="predicted"),
        ],
        loc="lower center",
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    return figure


# ---------------------------------------------------------------------------- temporal grounding (VTG)


def draw_temporal_spans(
    frames: np.ndarray,
    prediction: str,
    target: Mapping[str, Any],
    title: str = "",
    num_thumbnails: int = 8,
) -> matplotlib.figure.Figure:
    """A row of thumbnails above a time axis ``0..duration`` with the true (green) and predicted (red) spans.

    frames: the sampled clip uint8 ``[T, H, W, 3]``; frame ``k`` is taken at ``k * duration / T``
    seconds (the sampler's mean rate, what the processor is told). target: a VTG target
    (``timestamp [s, e]`` seconds, ``duration``, ``relative``, ``num_bins``, ``temporal_tokens``).
    The prediction is read with the temporal reward's parser and clipped to the clip like the reward
    does; the title gives the IoU, or says it is unparsable. Axes: ``min(num_thumbnails, T)``
    thumbnails, then the timeline (its ``patches``: the true span, then the predicted one if any).
    """
    frames = _check_video(frames)
    duration = finite_number(target.get("duration"))
    if duration is None or duration <= 0:
        raise ValueError(
            f"target duration must be a positive number of seconds, got {target.get('duration')!r}"
        )
    start, end = (min(max(float(v), 0.0), duration) for v in target["timestamp"])
    temporal = temporal_format(target)
    if temporal is None:
        raise ValueError(
            f"target has no valid answer format (relative, num_bins, temporal_tokens): {dict(target)}"
        )
    span = predicted_span(prediction if isinstance(prediction, str) else "", duration, temporal)
    clipped = None if span is None else tuple(min(max(v, 0.0), duration) for v in span)

    count = frames.shape[0]
    shown = sorted(set(np.linspace(0, count - 1, min(num_thumbnails, count)).round().astype(int).tolist()))
    figure = _figure(max(6.0, 1.3 * len(shown)), 3.2)
    grid = figure.add_gridspec(2, len(shown), height_ratios=(2.0, 1.0))
    times = [k * duration / count for k in shown]
    for column, (k, t) in enumerate(zip(shown, times, strict=True)):
        axes = figure.add_subplot(grid[0, column])
        axes.imshow(frames[k], interpolation="nearest")
        inside = start <= t < end
        axes.set_title(f"{t:.1f} s", fontsize=8, color=TRUE_COLOUR if inside else "black")
        axes.set_xticks([])
        axes.set_yticks([])
    timeline = figure.add_subplot(grid[1, :])
    timeline.add_patch(Rectangle((start, 1.1), end - start, 0.8, color=TRUE_COLOUR, label="true"))
    if clipped is not None and clipped[1] > clipped[0]:
        timeline.add_patch(
            Rectangle(
                (clipped[0], 0.1), clipped[1] - clipped[0], 0.8, color=PREDICTED_COLOUR, label="predicted"
            )
        )
    for t in times:  # where the thumbnails were taken
        timeline.axvline(t, color="grey", linewidth=0.5)
    timeline.set_xlim(0, duration)
    timeline.set_ylim(0, 2)
    timeline.set_yticks([0.5, 1.5], ["predicted", "true"], fontsize=8)
    timeline.set_xlabel("seconds", fontsize=8)
    if span is None:
        result = "prediction unparsable"
    elif clipped is None or clipped[1] <= clipped[0]:
        result = f"predicted {span[0]:.1f}-{span[1]:.1f} s outside the clip, IoU 0.00"
    else:
        result = f"IoU {span_iou(clipped, (start, end)):.2f}"
    figure.suptitle(f"{title}  {result}".strip(), fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    return figure


# ---------------------------------------------------------------------------- the callback


def sample_video(sample: Any) -> np.ndarray:
    """The first video (uint8 ``[T, H, W, 3]``) in a :class:`vlmlab.data.sample.Sample`'s messages."""
    for message in sample.messages:
        content = message.get("content")
        if isinstance(content, str):
            continue
        for item in content or ():
            if item.get("type") == "video" or "video" in item:
                return np.asarray(item["video"])
    raise ValueError(f"sample {sample.id!r} holds no video to draw")


def _dataset(loaders: Any) -> Any:
    """The dataset of the first dataloader (Lightning keeps one loader or a list of them)."""
    if isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    dataset = getattr(loaders, "dataset", None)
    if dataset is None:
        raise ValueError("PredictionPictures found no dataloader dataset to read the frames from")
    return dataset


def fetch_samples(dataset: Any, ids: Sequence[str], world_size: int = 1) -> list[Any]:
    """The samples with ``ids`` from an (unshuffled) dataset, in the order of ``ids``.

    The ``k``-th sample rank 0 saw is at index ``k * world_size`` when nothing was reordered, so that
    index is tried first; otherwise the dataset is scanned in order. KeyError for an id not found.
    """
    found: dict[str, Any] = {}
    for k, sample_id in enumerate(ids):
        guess = k * world_size
        if guess < len(dataset):
            sample = dataset[guess]
            if sample.id == sample_id:
                found[sample_id] = sample
    missing = [i for i in ids if i not in found]
    for index in range(len(dataset)) if missing else ():
        sample = dataset[index]
        if sample.id in missing:
            found[sample.id] = sample
            missing.remove(sample.id)
            if not missing:
                break
    if missing:
        raise KeyError(f"sample id(s) {missing} not found in the dataset ({len(dataset)} samples)")
    return [found[i] for i in ids]


class PredictionPictures(pl.Callback):
    """Log a picture of each of the first ``num_samples`` validation / test predictions to TensorBoard.

    draw: ``draw(frames, prediction, target, title=...) -> Figure`` (:func:`draw_volume_boxes`,
    :func:`draw_temporal_spans`, or a partial of one). every_n_val_epochs: draw on every n-th
    validation run (sanity checks excluded); test runs always draw.

    The module's ``validation_step`` / ``test_step`` return ``{"predictions": list[str]}`` in batch
    order; the callback keeps ``(id, prediction, target)`` of the first samples of the first
    dataloader, then reads their frames from the (unshuffled) dataloader's dataset by sample id.
    Figures go to ``{stage}/pictures/{i}`` of every TensorBoardLogger, from global rank 0 only.
    """

    def __init__(self, draw: Draw, num_samples: int = 4, every_n_val_epochs: int = 1):
        if not callable(draw):
            raise TypeError(f"draw must be a callable (a partial of a drawing function), got {draw!r}")
        if num_samples < 1 or every_n_val_epochs < 1:
            raise ValueError(
                f"num_samples and every_n_val_epochs must be >= 1, got {num_samples}, {every_n_val_epochs}"
            )
        self.draw = draw
        self.num_samples = num_samples
        self.every_n_val_epochs = every_n_val_epochs
        self.collected: list[tuple[str, str, dict[str, Any]]] = []
        self.active = False
        self.val_runs = 0  # validation runs seen, sanity checks excluded
        self.logged_tags: list[str] = []  # of the last drawing, for inspection

    # ------------------------------------------------------------------ collection

    def _start(self, trainer: pl.Trainer, active: bool) -> None:
        self.collected = []
        self.active = active and trainer.is_global_zero

    def _collect(self, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        if not self.active or dataloader_idx != 0 or len(self.collected) >= self.num_samples:
            return
        predictions = outputs.get("predictions") if isinstance(outputs, Mapping) else None
        ids, targets = list(getattr(batch, "ids", [])), list(getattr(batch, "targets", []))
        if (
            not isinstance(predictions, list | tuple)
            or len(predictions) != len(ids)
            or len(targets) != len(ids)
        ):
            raise TypeError(
                "PredictionPictures needs the step to return {'predictions': list[str]} with one text per "
                f"sample of a batch with ids and targets; got outputs {type(outputs).__name__} for "
                f"{len(ids)} ids, {len(targets)} targets"
            )
        for sample_id, text, target in zip(ids, predictions, targets, strict=True):
            if len(self.collected) < self.num_samples:
                self.collected.append((sample_id, text, target))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            self._start(trainer, False)
            return
        self._start(trainer, self.val_runs % self.every_n_val_epochs == 0)
        self.val_runs += 1

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, True)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(outputs, batch, dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(outputs, batch, dataloader_idx)

    # ------------------------------------------------------------------ drawing

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, "val", trainer.val_dataloaders)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log(trainer, "test", trainer.test_dataloaders)

    def _log(self, trainer: pl.Trainer, stage: str, loaders: Any) -> None:
        collected, self.collected, active, self.active = self.collected, [], self.active, False
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not active or not collected or not loggers:
            return
        samples = fetch_samples(_dataset(loaders), [c[0] for c in collected], trainer.world_size)
        self.logged_tags = []
        for i, ((sample_id, text, target), sample) in enumerate(zip(collected, samples, strict=True)):
            figure = self.draw(sample_video(sample), text, target, title=sample_id)
            tag = f"{stage}/pictures/{i}"
            for logger in loggers:
                # close=False: the figure is not pyplot's, there is nothing to close.
                logger.experiment.add_figure(tag, figure, trainer.global_step, close=False)
            self.logged_tags.append(tag)
        log.info("%d %s pictures logged to TensorBoard", len(collected), stage)
