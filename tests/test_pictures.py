"""Pictures of predictions in TensorBoard: boxes on MRI frames, spans on a timeline, batch-size histogram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import compose_config
from vlmlab.callbacks.pictures import (
    PREDICTED_COLOUR,
    TRUE_COLOUR,
    PredictionPictures,
    draw_temporal_spans,
    draw_volume_boxes,
    fetch_samples,
    frames_around,
    predicted_box,
)
from vlmlab.data.collate import VisionLanguageBatch
from vlmlab.data.sample import Sample
from vlmlab.tasks.coords import FrameGeometry


def brats_answer(box: list[float], peak: float = 5, ratio: float = 0.1) -> str:
    answer = json.dumps({"bbox_3d": box, "peak_slice": peak, "tumor_ratio": ratio})
    return f"<think>This video shows a tumour.</think><answer>{answer}</answer>"


def numbered_video(geometry: FrameGeometry) -> np.ndarray:
    """uint8 [T, H, W, 3] whose frame t is filled with the value t, so a shown frame names itself."""
    t, (h, w) = geometry.total_frames, geometry.frame_shape
    return np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None, None], (t, h, w, 3)).copy()


def rectangles(figure, colour: str) -> dict[int, tuple[float, float, float, float]]:
    """{axes index: (x, y, width, height)} of the rectangles drawn in ``colour`` (one at most per axes)."""
    out = {}
    for i, axes in enumerate(figure.axes):
        for patch in axes.patches:
            if patch.get_edgecolor() == to_rgba(colour) or patch.get_facecolor() == to_rgba(colour):
                assert i not in out
                out[i] = (patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height())
    return out


def shown_frames(figure) -> list[int]:
    return [int(axes.images[0].get_array()[0, 0, 0]) for axes in figure.axes]


# ---------------------------------------------------------------------------- volumes


def test_sequence_layout_draws_both_boxes_on_the_frames_of_their_z_range() -> None:
    geometry = FrameGeometry((10, 40, 40), num_modalities=2, layout="sequence")  # 20 frames of 40x40
    target = {
        "bbox_3d": [5, 6, 3, 15, 20, 8],
        "peak_slice": 5,
        "tumor_ratio": 0.1,
        "geometry": geometry.to_dict(),
    }
    pred = [6, 7, 4, 16, 21, 9]
    figure = draw_volume_boxes(numbered_video(geometry), brats_answer(pred), target, title="case")
    figure.canvas.draw()  # renders without error
    assert len(figure.axes) == 5 and shown_frames(figure) == [3, 4, 5, 6, 7]
    assert rectangles(figure, TRUE_COLOUR) == dict.fromkeys(range(5), (5.0, 6.0, 10.0, 14.0))
    assert rectangles(figure, PREDICTED_COLOUR) == dict.fromkeys(range(1, 5), (6.0, 7.0, 10.0, 14.0))
    assert all(p.get_linestyle() == "--" for ax in figure.axes for p in ax.patches if p.get_y() == 7.0)
    # IoU: intersection 9 x 13 x 4 over 2 x 10 x 14 x 5 - 468
    iou = 9 * 13 * 4 / (2 * 10 * 14 * 5 - 9 * 13 * 4)
    assert f"IoU {iou:.2f}" in figure._suptitle.get_text() and "case" in figure._suptitle.get_text()
    assert figure.axes[2].get_title().startswith("frame 5 (slice 5)")
    assert "true peak" in figure.axes[2].get_title() and "pred. peak" in figure.axes[2].get_title()

    # The second modality's run of frames, same boxes (frames 13..17 of the video).
    second = draw_volume_boxes(numbered_video(geometry), brats_answer(pred), target, modality=1)
    assert shown_frames(second) == [13, 14, 15, 16, 17]
    assert rectangles(second, TRUE_COLOUR) == dict.fromkeys(range(5), (5.0, 6.0, 10.0, 14.0))


def test_tiled_layout_draws_on_the_modality_tile() -> None:
    geometry = FrameGeometry((8, 20, 30), num_modalities=4, layout="tiled")  # 2x2 tiles of 20x30
    target = {
        "bbox_3d": [2, 3, 0, 12, 9, 2],
        "peak_slice": 0,
        "tumor_ratio": 0.1,
        "geometry": geometry.to_dict(),
    }
    video = numbered_video(geometry)
    figure = draw_volume_boxes(video, brats_answer([2, 3, 1, 12, 9, 3]), target, num_frames=3)
    assert shown_frames(figure) == [0, 1, 2]  # the peak at the start: the window shifts right
    assert figure.axes[0].images[0].get_array().shape[:2] == (40, 60)  # the whole tiled frame
    assert rectangles(figure, TRUE_COLOUR) == dict.fromkeys((0, 1), (2.0, 3.0, 10.0, 6.0))
    assert rectangles(figure, PREDICTED_COLOUR) == dict.fromkeys((1, 2), (2.0, 3.0, 10.0, 6.0))
    last = draw_volume_boxes(video, brats_answer([2, 3, 1, 12, 9, 3]), target, num_frames=3, modality=3)
    assert rectangles(last, TRUE_COLOUR) == dict.fromkeys(
        (0, 1), (32.0, 23.0, 10.0, 6.0)
    )  # bottom-right tile


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "no answer at all",
        "<answer>not json</answer>",
        "<answer>[1, 2]</answer>",
        '<answer>{"bbox_3d": [1, 2, 3]}</answer>',
        '<answer>{"bbox_3d": [9, 2, 3, 1, 5, 6]}</answer>',  # inverted
        '<answer>{"bbox_3d": [1, 2, NaN, 4, 5, 6]}</answer>',
        '<answer>{"bbox_3d": [1, 2, true, 4, 5, 6]}</answer>',
        "<answer>" + "[" * 5000 + "</answer>",
        None,
    ],
)
def test_junk_predictions_draw_only_the_true_box(junk: str | None) -> None:
    geometry = FrameGeometry((10, 16, 16))
    target = {
        "bbox_3d": [1, 1, 4, 5, 5, 6],
        "peak_slice": 5,
        "tumor_ratio": 0.1,
        "geometry": geometry.to_dict(),
    }
    figure = draw_volume_boxes(numbered_video(geometry), junk, target)  # type: ignore[arg-type]
    figure.canvas.draw()
    assert rectangles(figure, PREDICTED_COLOUR) == {}
    assert set(rectangles(figure, TRUE_COLOUR)) == {1, 2}  # frames 4, 5 of 3..7
    assert "unparsable" in figure._suptitle.get_text()


def test_wild_predicted_box_is_clipped_to_the_frame_and_renders() -> None:
    geometry = FrameGeometry((10, 16, 16))
    target = {
        "bbox_3d": [1, 1, 4, 5, 5, 6],
        "peak_slice": 5,
        "tumor_ratio": 0.1,
        "geometry": geometry.to_dict(),
    }
    figure = draw_volume_boxes(numbered_video(geometry), brats_answer([-1e300, 0, 0, 1e300, 8, 10]), target)
    figure.canvas.draw()
    assert rectangles(figure, PREDICTED_COLOUR)[0] == (-1.0, 0.0, 18.0, 8.0)


def test_volume_helpers_and_errors() -> None:
    assert frames_around(0, 10, 5) == [0, 1, 2, 3, 4]
    assert frames_around(9, 10, 5) == [5, 6, 7, 8, 9]
    assert frames_around(5, 10, 4) == [3, 4, 5, 6]
    assert frames_around(1, 3, 5) == [0, 1, 2]
    assert predicted_box(brats_answer([1, 2, 3, 4, 5, 6], peak=7)) == ([1, 2, 3, 4, 5, 6], 7.0)
    assert predicted_box("<answer>{}</answer>") == (None, None)
    geometry = FrameGeometry((10, 16, 16))
    target = {"bbox_3d": [1, 1, 4, 5, 5, 6], "peak_slice": 5, "geometry": geometry.to_dict()}
    with pytest.raises(ValueError, match="do not match the target's geometry"):
        draw_volume_boxes(np.zeros((9, 16, 16, 3), np.uint8), "", target)
    # Without a geometry the video is one modality, one frame per slice.
    no_geometry = {"bbox_3d": [1, 1, 4, 5, 5, 6], "peak_slice": 5}
    assert len(draw_volume_boxes(np.zeros((10, 16, 16, 3), np.uint8), "", no_geometry).axes) == 5


# ---------------------------------------------------------------------------- temporal grounding


def vtg_target(**changes) -> dict:
    target = {
        "timestamp": [2.0, 5.0],
        "duration": 10.0,
        "relative": True,
        "num_bins": 100,
        "temporal_tokens": False,
    }
    return {**target, **changes}


@pytest.mark.parametrize(
    ("prediction", "target"),
    [
        ("<answer>0.30 to 0.60</answer>", vtg_target()),
        ("<answer><30> to <60></answer>", vtg_target(temporal_tokens=True)),
        ("<answer>3.0 to 6.0</answer>", vtg_target(relative=False)),
    ],
)
def test_timeline_draws_true_and_predicted_spans(prediction: str, target: dict) -> None:
    frames = np.broadcast_to(np.arange(16, dtype=np.uint8)[:, None, None, None], (16, 8, 8, 3)).copy()
    figure = draw_temporal_spans(frames, prediction, target, title="clip")
    figure.canvas.draw()
    assert len(figure.axes) == 9  # 8 thumbnails + the timeline
    assert [int(ax.images[0].get_array()[0, 0, 0]) for ax in figure.axes[:8]] == [0, 2, 4, 6, 9, 11, 13, 15]
    assert figure.axes[0].get_title() == "0.0 s" and figure.axes[2].get_title() == "2.5 s"
    timeline = figure.axes[-1]
    assert timeline.get_xlim() == (0.0, 10.0)
    spans = [(p.get_x(), p.get_width()) for p in timeline.patches]
    assert spans == [(2.0, 3.0), pytest.approx((3.0, 3.0))]
    assert [p.get_facecolor() for p in timeline.patches] == [to_rgba(TRUE_COLOUR), to_rgba(PREDICTED_COLOUR)]
    assert "IoU 0.50" in figure._suptitle.get_text()  # overlap 2 s over a union of 4 s


@pytest.mark.parametrize(
    ("prediction", "words"),
    [
        ("junk", "unparsable"),
        ("<answer>0.6 to 0.3</answer>", "unparsable"),
        ("<answer>1.5 to 2.0</answer>", "outside"),
    ],
)
def test_timeline_of_a_bad_prediction_draws_only_the_true_span(prediction: str, words: str) -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    figure = draw_temporal_spans(frames, prediction, vtg_target())
    figure.canvas.draw()
    assert len(figure.axes) == 4  # fewer frames than thumbnails: every frame
    assert len(figure.axes[-1].patches) == 1 and words in figure._suptitle.get_text()


def test_timeline_rejects_a_target_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="duration"):
        draw_temporal_spans(np.zeros((3, 8, 8, 3), np.uint8), "", vtg_target(duration=0))
    with pytest.raises(ValueError, match="answer format"):
        draw_temporal_spans(np.zeros((3, 8, 8, 3), np.uint8), "", vtg_target(relative="yes"))


# ---------------------------------------------------------------------------- the callback (fast parts)


def video_sample(sample_id: str) -> Sample:
    video = np.zeros((2, 4, 4, 3), np.uint8)
    return Sample(id=sample_id, messages=[{"role": "user", "content": [{"type": "video", "video": video}]}])


def test_fetch_samples_by_position_or_by_scanning() -> None:
    dataset = [video_sample(f"s{i}") for i in range(6)]
    assert [s.id for s in fetch_samples(dataset, ["s0", "s1"])] == ["s0", "s1"]
    assert [s.id for s in fetch_samples(dataset, ["s0", "s2", "s4"], world_size=2)] == ["s0", "s2", "s4"]
    assert [s.id for s in fetch_samples(dataset, ["s5", "s3"])] == ["s5", "s3"]
    with pytest.raises(KeyError, match="nope"):
        fetch_samples(dataset, ["s0", "nope"])


def test_callback_checks_its_settings_and_the_step_outputs() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        PredictionPictures(draw_volume_boxes, num_samples=0)
    with pytest.raises(TypeError, match="callable"):
        PredictionPictures("draw_volume_boxes")  # type: ignore[arg-type]
    callback = PredictionPictures(draw_volume_boxes, num_samples=3)
    callback.active = True

    batch = VisionLanguageBatch(ids=["a", "b"], targets=[{}, {}])
    with pytest.raises(TypeError, match="predictions"):
        callback._collect(None, batch, 0)
    callback._collect({"predictions": ["x", "y"]}, batch, 0)
    callback._collect({"predictions": ["z", "w"]}, batch, 0)
    assert callback.collected == [("a", "x", {}), ("b", "y", {}), ("a", "z", {})]


# ---------------------------------------------------------------------------- end to end (short real fits)

SHORT = [
    "preset=tiny",
    "trainer.max_epochs=1",
    "trainer.max_steps=-1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.check_val_every_n_epoch=1",
    "trainer.val_check_interval=1.0",  # some tiny presets validate every N steps
    "trainer.log_every_n_steps=1",
    "data.batch_size=4",
    "task.module.generation.max_new_tokens=8",
    "~callbacks.hf_export",
]


def pictures_overrides(draw: str, num_samples: int = 2) -> list[str]:
    """The experiment's own ``callbacks.prediction_pictures`` (no ``+``: it must be configured there)."""
    key = "callbacks.prediction_pictures"
    return [f"{key}.draw._target_=vlmlab.callbacks.pictures.{draw}", f"{key}.num_samples={num_samples}"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic data folder for the fits of this module (writing BraTS cases is the slow part)."""
    return tmp_path_factory.mktemp("data")


def fit(overrides: list[str], tmp_path: Path, data_dir: Path, test: bool = False) -> EventAccumulator:
    """Build as train.py does, fit (then test), and read the run's TensorBoard events back."""
    import vlmlab.run

    cfg = compose_config("train", [*overrides, f"paths.data_dir={data_dir}"], tmp_path)
    run = vlmlab.run.build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)
    if test:
        run.trainer.test(run.module, datamodule=run.datamodule)
    events = EventAccumulator(
        str(Path(cfg.paths.output_dir) / "tensorboard"),
        size_guidance={"images": 0, "histograms": 0, "tensors": 0, "scalars": 0},
    )
    events.Reload()
    return events


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "draw"), [("brats_sft", "draw_volume_boxes"), ("vtg_sft", "draw_temporal_spans")]
)
def test_sft_fit_logs_prediction_pictures_and_the_batch_size_histogram(
    experiment: str, draw: str, tmp_path: Path, data_dir: Path
) -> None:
    events = fit([f"experiment={experiment}", *SHORT, *pictures_overrides(draw)], tmp_path, data_dir)
    assert {"val/pictures/0", "val/pictures/1"} <= set(events.Tags()["images"])
    image = events.Images("val/pictures/0")[-1]
    assert image.width > 200 and image.height > 100
    assert "train/batch_size" in events.Tags()["histograms"]
    histogram = events.Histograms("train/batch_size")[-1].histogram_value
    assert histogram.num == 1 and histogram.max == 4  # one batch of preset=tiny's 4 samples a window
    assert "train/batch_size/avg" in events.Tags()["scalars"]


@pytest.mark.slow
def test_grpo_fit_logs_completions_text_and_pictures(tmp_path: Path, data_dir: Path) -> None:
    overrides = [
        "experiment=brats_grpo",
        *SHORT,
        "trainer.limit_train_batches=1",
        "data.batch_size=1",
        "task.module.grpo.num_generations=2",
        "task.module.grpo.num_iterations=1",
        "task.module.grpo.log_completions_every_n_steps=1",
        *pictures_overrides("draw_volume_boxes", num_samples=1),
    ]
    events = fit(overrides, tmp_path, data_dir, test=True)
    # add_text stores a tensor summary under "<tag>/text_summary".
    assert "train/completions" in {t.rsplit("/text_summary", 1)[0] for t in events.Tags()["tensors"]}
    assert {"val/pictures/0", "test/pictures/0"} <= set(events.Tags()["images"])
