"""Video temporal grounding: frame sampling, video reading, the answer format, the JSONL source, the synthetic writer."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vlmlab.data.collate import IGNORE_INDEX, SFTCollator
from vlmlab.data.errors import DataError, keep_good
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.vtg import BACKGROUND, COLOURS, write, write_video
from vlmlab.data.video import VideoError, VideoFrames, read_video, sample_frame_indices
from vlmlab.data.vtg import VTGDataModule, read_rows, validate_file
from vlmlab.tasks.grounding import (
    TemporalFormat,
    format_span,
    grounding_prompt,
    parse_span,
    relative_decimals,
    span_bins,
)
from vlmlab.tools.synth import main as synth_main
from vlmlab.tools.validate import main as validate_main

# The grounding recipe's example row, verbatim.
RECIPE_LINE = (
    '{"video": "./data/videos/timerft_data/_0yiT0hhCCM_00:06:44:200_00:07:09:100.mp4", '
    '"duration": 24.900000000000034, "timestamp": [11.3, 15.0], '
    '"sentence": "the paper bill has an image of a woman holding up a paper", '
    '"qid": "my|internvid-vtime|_0yiT0hhCCM|the paper bill has an image of a woman holding up a paper", '
    '"video_start": 404.2, "video_end": 429.1, "difficulty": 24.650233177881407, "pred": [0.0, 15.01]}'
)
ALL_FRAMES = VideoFrames(max_frames=1000, height=None, width=None)


def settings(**kwargs: object) -> VideoFrames:
    return VideoFrames(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- frame index selection


@pytest.mark.parametrize(
    ("total", "fps", "kwargs", "start", "end", "expected"),
    [
        # uniform: round(linspace(0, 9, 4)) = 0, 3, 6, 9
        (100, 4.0, dict(max_frames=4), 0, 10, [0, 3, 6, 9]),
        # within budget: every frame of the clip
        (100, 4.0, dict(max_frames=8), 2, 7, [2, 3, 4, 5, 6]),
        # round(linspace(0, 7, 3)) = 0, 3.5 -> 4 (half to even), 7
        (8, 4.0, dict(max_frames=3), 0, 8, [0, 4, 7]),
        # fps 2 on a 4 fps file: every second frame
        (24, 4.0, dict(fps=2.0), 0, 24, list(range(0, 24, 2))),
        # fps 2 from a trimmed start: 5 + floor(k * 2) for k * 2 < 8
        (24, 4.0, dict(fps=2.0), 5, 13, [5, 7, 9, 11]),
        # fps 3 on 4 fps: floor(k * 4/3), k < 18 -> 18 frames; then round(linspace(0, 17, 4)) = 0, 6, 11, 17
        (24, 4.0, dict(fps=3.0, max_frames=4), 0, 24, [0, 8, 14, 22]),
        # fps above the file's rate never upsamples
        (6, 4.0, dict(fps=30.0), 0, 6, [0, 1, 2, 3, 4, 5]),
    ],
)
def test_uniform_indices(total, fps, kwargs, start, end, expected) -> None:
    indices = sample_frame_indices(total, fps, settings(**kwargs), start, end, rng=None)
    assert indices.dtype == np.int64
    assert indices.tolist() == expected


def test_fps_timeline_on_30fps() -> None:
    # 1 fps on a 30 fps file of 95 frames: the frames at 0, 1, 2, 3 s.
    assert sample_frame_indices(95, 30.0, settings(fps=1.0), 0, 95).tolist() == [0, 30, 60, 90]


def test_random_indices_one_per_segment() -> None:
    cfg = settings(max_frames=3, sampling="random")
    seen = [set(), set(), set()]
    for seed in range(200):
        indices = sample_frame_indices(12, 4.0, cfg, 0, 12, np.random.default_rng(seed))
        assert len(indices) == 3
        for k, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 12)]):  # segments floor(i * 12 / 3)
            assert lo <= indices[k] < hi
            seen[k].add(int(indices[k]))
    assert seen == [set(range(0, 4)), set(range(4, 8)), set(range(8, 12))]  # every frame can be drawn
    a = sample_frame_indices(
        100, 4.0, settings(sampling="random", max_frames=8), 0, 100, np.random.default_rng(1)
    )
    b = sample_frame_indices(
        100, 4.0, settings(sampling="random", max_frames=8), 0, 100, np.random.default_rng(1)
    )
    assert a.tolist() == b.tolist() and a.tolist() == sorted(set(a.tolist()))
    # A clip within budget is returned whole, no randomness.
    assert sample_frame_indices(5, 4.0, cfg, 1, 4, np.random.default_rng(0)).tolist() == [1, 2, 3]


def test_keyframe_indices_and_fallback() -> None:
    cfg = settings(max_frames=3, sampling="keyframe")
    # 4 keyframes in the clip >= 3 wanted: keys[round(linspace(0, 3, 3))] = keys[0, 2, 3]
    assert sample_frame_indices(24, 4.0, cfg, 0, 24, keyframes=[0, 8, 16, 23]).tolist() == [0, 16, 23]
    # Only 8 and 16 lie in [4, 20): too few, fall back to uniform over 16 frames: 4 + (0, 8, 15)
    assert sample_frame_indices(24, 4.0, cfg, 4, 20, keyframes=[0, 8, 16, 23]).tolist() == [4, 12, 19]


def test_index_selection_errors() -> None:
    with pytest.raises(ValueError, match="rng"):
        sample_frame_indices(100, 4.0, settings(sampling="random", max_frames=2), 0, 100, rng=None)
    with pytest.raises(ValueError, match="keyframe"):
        sample_frame_indices(100, 4.0, settings(sampling="keyframe"), 0, 100)
    with pytest.raises(ValueError, match="start_frame"):
        sample_frame_indices(10, 4.0, settings(), 5, 5)
    for bad in (dict(max_frames=0), dict(sampling="dense"), dict(fps=-1.0), dict(height=0)):
        with pytest.raises(ValueError):
            settings(**bad)


# ---------------------------------------------------------------- reading videos


def ramp_video(path: Path, frames: int, fps: int, size: int = 32) -> None:
    """Frame k is a flat grey of level 2k (mod 256 never reached in these tests) with a red square on frames 8..15."""
    pixels = np.empty((frames, size, size, 3), dtype=np.uint8)
    pixels[:] = (2 * np.arange(frames, dtype=np.uint8))[:, None, None, None]
    pixels[8:16, :8, :8] = COLOURS["red"]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, pixels, fps)


@pytest.fixture(scope="module")
def ramp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    ramp_video(path, 24, 4)
    return path


def grey_level(frame: np.ndarray) -> float:
    return float(frame[16:, 16:].mean())


def test_read_whole_video(ramp: Path) -> None:
    video = read_video(ramp, ALL_FRAMES)
    assert video.frames.shape == (24, 32, 32, 3) and video.frames.dtype == np.uint8
    assert video.indices.tolist() == list(range(24))
    np.testing.assert_allclose(video.timestamps, np.arange(24) / 4)
    assert video.duration == pytest.approx(6.0) and video.fps == pytest.approx(4.0)
    for k in range(24):
        assert abs(grey_level(video.frames[k]) - 2 * k) <= 3
        red = video.frames[k, 1:7, 1:7].mean(axis=(0, 1))
        assert (np.abs(red - COLOURS["red"]).max() < 40) == (8 <= k < 16)


def test_read_trimmed_resized_video(ramp: Path) -> None:
    # Trim [1.0, 3.0] s: frames 4..11, timestamps from the trimmed start.
    video = read_video(ramp, settings(max_frames=32, height=16, width=24), start=1.0, end=3.0)
    assert video.indices.tolist() == list(range(4, 12))
    np.testing.assert_allclose(video.timestamps, np.arange(8) / 4)
    assert video.frames.shape == (8, 16, 24, 3)
    assert video.duration == pytest.approx(2.0) and video.fps == pytest.approx(4.0)
    assert abs(float(video.frames[0, 8:, 12:].mean()) - 8) <= 3
    # Capped: round(linspace(0, 7, 3)) = 0, 4 (3.5, half to even), 7 of frames 4..11
    capped = read_video(ramp, settings(max_frames=3, height=None, width=None), start=1.0, end=3.0)
    assert capped.indices.tolist() == [4, 8, 11]
    np.testing.assert_allclose(capped.timestamps, [0.0, 1.0, 1.75])
    assert capped.fps == pytest.approx(1.5)  # 3 frames over 2 s
    # A trim end beyond the file is clamped to its end; a non-grid start starts at the next frame.
    tail = read_video(ramp, ALL_FRAMES, start=5.1, end=99.0)
    assert tail.indices.tolist() == [21, 22, 23]
    np.testing.assert_allclose(tail.timestamps, [0.15, 0.4, 0.65])
    assert tail.duration == pytest.approx(0.9)


def test_read_video_sampling_modes(ramp: Path) -> None:
    keyframe = read_video(ramp, settings(max_frames=2, sampling="keyframe", height=None, width=None))
    assert len(keyframe.frames) == 2 and keyframe.indices[0] == 0
    rng = np.random.default_rng(0)
    random = read_video(ramp, settings(max_frames=4, sampling="random", height=None, width=None), rng=rng)
    assert [lo <= i < lo + 6 for lo, i in zip((0, 6, 12, 18), random.indices, strict=True)] == [True] * 4
    for k, i in enumerate(random.indices):
        assert abs(grey_level(random.frames[k]) - 2 * i) <= 3


def test_video_errors_name_the_path(tmp_path: Path, ramp: Path) -> None:
    with pytest.raises(VideoError, match=re.escape(str(tmp_path / "nope.mp4"))):
        read_video(tmp_path / "nope.mp4", ALL_FRAMES)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoError, match=re.escape(str(garbage))):
        read_video(garbage, ALL_FRAMES)
    with pytest.raises(VideoError, match="holds no part"):
        read_video(ramp, ALL_FRAMES, start=7.0, end=8.0)


# ---------------------------------------------------------------- answer formats


def test_span_bins_and_formats() -> None:
    # 11.3 / 24.9 * 100 = 45.38 -> 45; 15.0 / 24.9 * 100 = 60.24 -> 60
    assert span_bins(11.3, 15.0, 24.9, 100) == (45, 60)
    assert span_bins(0.0, 24.9, 24.9, 100) == (0, 100)
    assert span_bins(2.5, 7.5, 10.0, 10) == (3, 8)  # 2.5 and 7.5 bins: half up
    assert span_bins(5.0, 5.01, 10.0, 10) == (5, 6)  # shorter than a bin: one bin long
    assert span_bins(9.99, 10.0, 10.0, 10) == (9, 10)
    assert [relative_decimals(n) for n in (100, 10, 1000, 500, 64)] == [2, 2, 3, 3, 4]
    relative, absolute = TemporalFormat(), TemporalFormat(use_relative_timestamps=False)
    tokens = TemporalFormat(use_temporal_tokens=True)
    assert format_span(11.3, 15.0, 24.9, relative) == "<answer>0.45 to 0.60</answer>"
    assert format_span(11.3, 15.0, 24.9, absolute) == "<answer>11.3 to 15.0</answer>"
    assert format_span(11.3, 15.0, 24.9, tokens) == "<answer><45> to <60></answer>"
    assert format_span(11.3, 15.0, 24.9, TemporalFormat(num_bins=1000)) == "<answer>0.454 to 0.602</answer>"
    assert "<0> (start of the video) to <100>" in grounding_prompt("a dog", 24.9, tokens)
    assert "seconds with one decimal" in grounding_prompt("a dog", 24.9, absolute)
    assert '"a dog"' in grounding_prompt("a dog", 24.9, relative)


def test_parse_span() -> None:
    relative, absolute = TemporalFormat(), TemporalFormat(use_relative_timestamps=False)
    tokens = TemporalFormat(use_temporal_tokens=True)
    assert parse_span("<answer>11.3 to 15.0</answer>", 24.9, absolute) == (11.3, 15.0)
    assert parse_span("<answer>0.5 to 0.75</answer>", 20.0, relative) == (10.0, 15.0)
    assert parse_span("think <answer><25> to <50></answer>", 20.0, tokens) == (5.0, 10.0)
    assert parse_span("<answer>1 to 2</answer> <answer>3 to 4</answer>", 9.0, absolute) == (3.0, 4.0)
    for garbage in ("", "<answer>soon</answer>", "11 to 15", "<answer>1 to</answer>", None):
        assert parse_span(garbage, 20.0, relative) is None  # type: ignore[arg-type]
    for temporal in (relative, absolute, tokens):
        text = format_span(11.3, 15.0, 24.9, temporal)
        start, end = parse_span(text, 24.9, temporal)  # type: ignore[misc]
        assert abs(start - 11.3) <= 0.13 and abs(end - 15.0) <= 0.13  # within half a bin (0.125 s)


def test_temporal_format_checks() -> None:
    with pytest.raises(ValueError, match="num_bins"):
        TemporalFormat(num_bins=0)
    with pytest.raises(ValueError, match="relative"):
        TemporalFormat(use_relative_timestamps=False, use_temporal_tokens=True)
    with pytest.raises(ValueError, match="999"):
        TemporalFormat(num_bins=1000, use_temporal_tokens=True)


# ---------------------------------------------------------------- the recipe's example row


@pytest.fixture(scope="module")
def recipe_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recipe's row with a 432 s, 1 fps stand-in for its video (frame k has grey level k // 2)."""
    root = tmp_path_factory.mktemp("recipe")
    video = root / "data/videos/timerft_data/_0yiT0hhCCM_00:06:44:200_00:07:09:100.mp4"
    video.parent.mkdir(parents=True)
    pixels = np.empty((432, 16, 16, 3), dtype=np.uint8)
    pixels[:] = (np.arange(432) // 2).astype(np.uint8)[:, None, None, None]
    write_video(video, pixels, fps=1)
    extra = dict(json.loads(RECIPE_LINE), qid="second", camera="gopro", tags=["a", "b"])
    (root / "train.jsonl").write_text(RECIPE_LINE + "\n\n" + json.dumps(extra) + "\n")
    return root


def train_split(path: Path, video_dir: Path | None = None, **kwargs: object) -> VTGDataModule:
    """A datamodule set up with the file ``path`` as its training split (no val / test)."""
    dm = VTGDataModule(
        root=str(path.parent),
        video_dir=None if video_dir is None else str(video_dir),
        train_file=path.name,
        val_file=None,
        test_file=None,
        **kwargs,  # type: ignore[arg-type]
    )
    dm.setup("fit")
    return dm


def test_recipe_example_row(recipe_example: Path) -> None:
    dm = train_split(recipe_example / "train.jsonl", frames=VideoFrames(height=None, width=None))
    dataset = dm.datasets["train"]
    assert len(dataset) == 2
    assert dm.durations("train") == [24.900000000000034, 24.900000000000034]
    assert dm.sample_costs("train") == [24.900000000000034, 24.900000000000034]
    sample = dataset[0]
    assert isinstance(sample, Sample)
    assert (
        sample.id
        == "my|internvid-vtime|_0yiT0hhCCM|the paper bill has an image of a woman holding up a paper"
    )
    # Timestamps stay relative to the trimmed clip [404.2, 429.1] of the file.
    assert sample.target == {
        "timestamp": [11.3, 15.0],
        "duration": 24.900000000000034,
        "relative": True,
        "num_bins": 100,
        "temporal_tokens": False,
    }
    assert sample.answer == "<answer>0.45 to 0.60</answer>"
    assert sample.metadata == {
        "video": "./data/videos/timerft_data/_0yiT0hhCCM_00:06:44:200_00:07:09:100.mp4",
        "sentence": "the paper bill has an image of a woman holding up a paper",
        "qid": "my|internvid-vtime|_0yiT0hhCCM|the paper bill has an image of a woman holding up a paper",
        "video_start": 404.2,
        "video_end": 429.1,
        "difficulty": 24.650233177881407,
        "pred": [0.0, 15.01],
        "annotation_file": str(recipe_example / "train.jsonl"),
        "annotation_line": 1,
    }
    (message,) = sample.messages
    assert message["role"] == "user"
    video, text = message["content"]
    # Frames of the trimmed clip: file frames 405..429 (the first starting at or after 404.2 s).
    assert video["type"] == "video" and video["video"].shape == (25, 16, 16, 3)
    assert abs(float(video["video"][0].mean()) - 405 // 2) <= 3
    assert abs(float(video["video"][-1].mean()) - 429 // 2) <= 3
    assert video["fps"] == pytest.approx(25 / 24.9)
    assert (
        text["type"] == "text" and "the paper bill has an image of a woman holding up a paper" in text["text"]
    )
    assert "<answer>S to E</answer>" in text["text"]
    # Line 3 (after a blank line): unknown keys land in metadata under their own names.
    second = dataset[1]
    assert second.id == "second"
    assert second.metadata["camera"] == "gopro" and second.metadata["tags"] == ["a", "b"]
    assert second.metadata["annotation_line"] == 3
    absolute = train_split(
        recipe_example / "train.jsonl", temporal=TemporalFormat(use_relative_timestamps=False)
    )
    assert absolute.datasets["train"].items[0].row["timestamp"] == [11.3, 15.0]
    assert absolute.datasets["train"][0].answer == "<answer>11.3 to 15.0</answer>"
    assert validate_file(recipe_example / "train.jsonl", video_dir=recipe_example) == []


# ---------------------------------------------------------------- bad input


def good_row(**changes: object) -> dict:
    row = {
        "video": "videos/clip.mp4",
        "duration": 6.0,
        "timestamp": [2.0, 4.0],
        "sentence": "the red square appears",
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()

BAD_ROWS = [
    ("missing duration", good_row(duration=_DROP), "duration"),
    ("negative duration", good_row(duration=-1.0), "duration"),
    ("duration as text", good_row(duration="6 s"), "duration"),
    ("timestamp past duration", good_row(timestamp=[2.0, 6.5]), "timestamp"),
    ("timestamp reversed", good_row(timestamp=[4.0, 2.0]), "timestamp"),
    ("timestamp negative", good_row(timestamp=[-1.0, 2.0]), "timestamp"),
    ("timestamp one number", good_row(timestamp=[2.0]), "timestamp"),
    ("empty sentence", good_row(sentence="  "), "sentence"),
    ("missing video", good_row(video=_DROP), "video"),
    ("video file missing", good_row(video="videos/missing.mp4"), "video"),
    ("trim reversed", good_row(video_start=3.0, video_end=1.0), "video_end"),
    ("trim vs duration", good_row(video_start=0.0, video_end=3.0), "duration"),
    ("pred not a span", good_row(pred="late"), "pred"),
    ("qid an object", good_row(qid={"a": 1}), "qid"),
    ("reserved key", good_row(annotation_line=7), "annotation_line"),
    ("not an object", [1, 2], "row"),
    ("not JSON", "{'video': 'a.mp4'", "json"),
]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    ramp_video(root / "videos/clip.mp4", 24, 4)  # 6 s
    return root


def write_rows(path: Path, second: object) -> Path:
    first = good_row(qid="q1")
    line = second if isinstance(second, str) else json.dumps(second)
    path.write_text(json.dumps(first) + "\n" + line + "\n")
    return path


@pytest.mark.parametrize(("case", "row", "field"), BAD_ROWS, ids=[c for c, _, _ in BAD_ROWS])
def test_bad_rows_name_file_row_and_field(
    clip_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, row: object, field: str
) -> None:
    path = write_rows(tmp_path / "train.jsonl", row)
    expected = f"{path}:2: {field}:"
    with pytest.raises(DataError) as error:
        train_split(path, clip_dir)
    assert expected in str(error.value), str(error.value)
    with pytest.raises(DataError, match=re.escape(expected)):
        keep_good(read_rows(path, clip_dir), "raise")
    problems = validate_file(path, decode=False, video_dir=clip_dir)
    assert expected in [f"{p.path}:{p.row}: {p.field}:" for p in problems]
    assert all(p.row == 2 for p in problems)  # the good first line is never blamed
    with caplog.at_level(logging.WARNING):
        skipped = train_split(path, clip_dir, on_bad_sample="skip").datasets["train"]
    assert len(skipped) == 1 and skipped[0].id == "q1"
    assert f"{path}: skipped 1 of 2 rows (data.on_bad_sample=skip)" in caplog.text


BAD_VIDEOS = [
    ("undecodable file", good_row(video="videos/garbage.mp4"), "video"),
    ("duration differs from the file", good_row(duration=9.0), "duration"),
    (
        "trim beyond the file",
        good_row(video_start=7.0, video_end=9.0, duration=2.0, timestamp=[0.0, 1.0]),
        "video_start",
    ),
    ("trim end beyond the file", good_row(video_start=2.0, video_end=10.0, duration=8.0), "video_end"),
]


@pytest.mark.parametrize(("case", "row", "field"), BAD_VIDEOS, ids=[c for c, _, _ in BAD_VIDEOS])
def test_bad_videos_found_by_decoding(
    clip_dir: Path, tmp_path: Path, case: str, row: dict, field: str
) -> None:
    (clip_dir / "videos/garbage.mp4").write_bytes(b"\x00garbage" * 64)
    path = write_rows(tmp_path / "val.jsonl", row)
    assert validate_file(path, decode=False, video_dir=clip_dir) == []  # headers look fine
    problems = validate_file(path, decode=True, video_dir=clip_dir)
    assert f"{path}:2: {field}:" in [f"{p.path}:{p.row}: {p.field}:" for p in problems], problems


def test_repeated_qids_get_line_ids(clip_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "train.jsonl"
    lines = [good_row(qid="q1"), good_row(qid="q2"), good_row(), good_row(qid="q1", timestamp=[0.0, 1.0])]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    assert [item.id for item in read_rows(path, clip_dir).items] == ["train:1", "q2", "train:3", "train:4"]
    assert "2 rows share a qid" in caplog.text
    dataset = train_split(path, clip_dir).datasets["train"]
    assert dataset[3].id == "train:4" and dataset[3].metadata["qid"] == "q1"


def test_ids_are_those_of_the_kept_rows(clip_dir: Path, tmp_path: Path) -> None:
    # The second q1 is bad: once it is skipped, the first q1 is unique and keeps its qid as id.
    path = tmp_path / "train.jsonl"
    lines = [good_row(qid="q1"), good_row(qid="q1", duration=-1.0), good_row(qid="q2")]
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    dataset = train_split(path, clip_dir, on_bad_sample="skip").datasets["train"]
    assert [dataset[i].id for i in range(len(dataset))] == ["q1", "q2"]


def test_missing_or_unreadable_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="annotation file not found"):
        train_split(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="annotation file not found"):
        read_rows(tmp_path / "nope.jsonl")
    assert [p.field for p in validate_file(tmp_path / "nope.jsonl")] == ["file"]
    # Not UTF-8 (latin-1 "é"): the line is named with the byte and its offset in the file.
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(good_row(sentence="café"), ensure_ascii=False).encode("latin-1") + b"\n")
    offset = latin.read_bytes().index(0xE9)
    assert [str(p) for p in validate_file(latin, decode=False)] == [
        f"{latin}:1: encoding: not UTF-8: byte 0xe9 at offset {offset}"
    ]
    with pytest.raises(DataError, match="not UTF-8"):
        train_split(latin)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [str(p) for p in validate_file(empty)] == [
        f"{empty}:-: file: no *.jsonl annotation file in this folder"
    ]


# ---------------------------------------------------------------- synthetic data and the DataModule


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("vtg")
    return out, write(out, num_train=12, num_val=4, num_test=4)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def colour_visible(frame: np.ndarray, colour: str) -> bool:
    close = np.abs(frame.astype(int) - np.array(COLOURS[colour])).max(axis=-1) < 50
    return int(close.sum()) >= 50  # the smallest square is 21 x 21 pixels


def test_synthetic_layout_and_variety(synthetic: tuple[Path, dict[str, Path]]) -> None:
    out, paths = synthetic
    assert paths == {split: out / f"{split}.jsonl" for split in ("train", "val", "test")}
    all_rows = [row for split in ("train", "val", "test") for row in rows(paths[split])]
    assert [len(rows(paths[s])) for s in ("train", "val", "test")] == [12, 4, 4]
    assert [row["video"] for row in all_rows] == [f"videos/vtg_{i:03d}.mp4" for i in range(20)]
    assert all(list(row)[:4] == ["video", "duration", "timestamp", "sentence"] for row in all_rows)
    assert sum("video_start" in row for row in all_rows) == 7  # i % 3 == 1
    assert sum("qid" in row for row in all_rows) == 16  # all but i % 5 == 3
    assert sum("colour" in row and row["source"] == "synthetic" for row in all_rows) == 5  # i % 4 == 0
    assert all(4.0 <= row["duration"] <= 10.0 for row in all_rows)
    assert len({row["sentence"].split()[1] for row in all_rows}) >= 4  # several colours


def test_synthetic_labels_are_in_the_pixels(synthetic: tuple[Path, dict[str, Path]]) -> None:
    out, paths = synthetic
    for split in paths:
        for row in rows(paths[split]):
            colour = row["sentence"].split()[1]
            assert colour in COLOURS
            video = read_video(out / row["video"], ALL_FRAMES, row.get("video_start"), row.get("video_end"))
            assert video.frames.shape[1:] == (64, 64, 3)
            assert video.duration == pytest.approx(row["duration"])
            start, end = row["timestamp"]
            visible = [colour_visible(frame, colour) for frame in video.frames]
            assert visible == [start <= t < end for t in video.timestamps], row
            assert np.abs(video.frames[0, :2, :2].astype(int) - BACKGROUND).max() < 20 or visible[0]
            if "video_start" in row:  # the decoy before the trim is in the file, not in the clip
                whole = read_video(out / row["video"], ALL_FRAMES)
                assert colour_visible(whole.frames[0], colour)


def test_synthetic_distractor(tmp_path: Path) -> None:
    paths = write(tmp_path, num_train=6, num_val=0, num_test=0, distractor=True, seed=3)
    distracted = 0
    for row in rows(paths["train"]):
        colour = row["sentence"].split()[1]
        video = read_video(tmp_path / row["video"], ALL_FRAMES, row.get("video_start"), row.get("video_end"))
        start, end = row["timestamp"]
        assert [colour_visible(f, colour) for f in video.frames] == [
            start <= t < end for t in video.timestamps
        ]
        others = [c for c in COLOURS if c != colour]
        shown = [any(colour_visible(f, c) for c in others) for f in video.frames]
        assert not any(s and start <= t < end for s, t in zip(shown, video.timestamps, strict=True))
        distracted += any(shown)
    assert distracted >= 4


def test_synthetic_deterministic_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write(tmp_path / name, num_train=3, num_val=1, num_test=1, seed=seed)
    a, b, c = (snapshot(tmp_path / name) for name in "abc")
    assert len(a) == 3 + 5 and a == b and a != c
    assert (
        synth_main(["vtg", str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1", "--num-test", "1"])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[0] == f"train: {tmp_path / 'cli' / 'train.jsonl'}"
    assert validate_main(["vtg", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'cli'}: OK"
    with pytest.raises(ValueError, match="size"):
        write(tmp_path / "odd", size=33)


def test_validate_passes_on_synthetic(synthetic: tuple[Path, dict[str, Path]]) -> None:
    out, paths = synthetic
    for path in paths.values():
        assert validate_file(path, decode=True) == []
    assert validate_file(out) == []  # a folder: every *.jsonl in it


@pytest.mark.parametrize("temporal", [TemporalFormat(), TemporalFormat(use_relative_timestamps=False)])
def test_datamodule_yields_samples_that_collate(
    synthetic: tuple[Path, dict[str, Path]], tiny_processors: dict, temporal: TemporalFormat
) -> None:
    out, paths = synthetic
    processor = tiny_processors["qwen2_5_vl"]
    frames = VideoFrames(max_frames=8, sampling="random", height=56, width=56)
    dm = VTGDataModule(
        frames=frames,
        temporal=temporal,
        root=str(out),
        collator=SFTCollator(processor),
        batch_size=2,
        num_workers=0,
    )
    dm.setup("fit")
    # Random sampling is train-only: val decodes the uniform frames.
    assert all(item.training for item in dm.datasets["train"].items)
    assert not any(item.training for item in dm.datasets["val"].items)
    val_row = dm.datasets["val"].items[0].row
    uniform = read_video(
        out / val_row["video"],
        replace(frames, sampling="uniform"),
        val_row.get("video_start"),
        val_row.get("video_end"),
    )
    np.testing.assert_array_equal(dm.datasets["val"][0].messages[0]["content"][0]["video"], uniform.frames)
    assert dm.durations("train") == [row["duration"] for row in rows(paths["train"])]
    assert dm.durations("test") == [row["duration"] for row in rows(paths["test"])]
    sample = dm.datasets["train"][1]
    row = rows(paths["train"])[1]  # a trimmed row
    assert isinstance(sample, Sample) and "video_start" in row
    assert sample.target["timestamp"] == row["timestamp"] and sample.target["duration"] == row["duration"]
    assert sample.answer == format_span(*row["timestamp"], row["duration"], temporal)
    video = sample.messages[0]["content"][0]["video"]
    assert video.shape == (8, 56, 56, 3) and video.dtype == np.uint8
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 2 and batch.inputs["input_ids"].shape[0] == 2
    assert "pixel_values_videos" in batch.inputs and batch.inputs["video_grid_thw"].shape == (2, 3)
    tokenizer = processor.tokenizer
    for b in range(2):
        learned = batch.inputs["input_ids"][b][batch.labels[b] != IGNORE_INDEX]
        assert tokenizer.decode(learned) == batch.answers[b] + "<|im_end|>"
    val = dm._collator().eval([dm.datasets["val"][0], dm.datasets["val"][1]])
    assert val.prompt_inputs is not None and val.targets[0]["relative"] == temporal.use_relative_timestamps


def test_write_synthetic_through_datamodule(tmp_path: Path) -> None:
    dm = VTGDataModule(root=str(tmp_path / "tiny"), synthesize=True, synth_cases=2)
    dm.prepare_data()
    assert len(rows(tmp_path / "tiny" / "train.jsonl")) == 2
    dm.setup("test")
    assert len(dm.datasets["test"]) == 8


def test_synth_options_reach_the_writer(tmp_path: Path) -> None:
    dm = VTGDataModule(
        root=str(tmp_path / "tiny"),
        synthesize=True,
        synth_cases=6,
        synth_options={"num_val": 3, "num_test": 0, "max_window": 0.2},
    )
    dm.prepare_data()
    assert len(rows(tmp_path / "tiny" / "val.jsonl")) == 3
    for row in rows(tmp_path / "tiny" / "train.jsonl"):
        start, end = row["timestamp"]
        assert (
            end - start <= max(1.0, 0.2 * row["duration"]) + 1e-9
        )  # 1 s (fps frames) is the shortest window
    with pytest.raises(ValueError, match="max_window"):
        write(tmp_path / "bad", max_window=0.0)


def test_window_step_aligns_windows_with_temporal_patches(tmp_path: Path) -> None:
    paths = write(tmp_path, num_train=12, num_val=0, num_test=0, fps=2, window_step=2, max_window=0.4, seed=1)
    for row in rows(paths["train"]):
        frames = [round(t * 2) for t in (*row["timestamp"], row["duration"])]
        assert all(f % 2 == 0 for f in frames)  # start, end and clip length are whole 2-frame patches
        assert row["timestamp"][1] - row["timestamp"][0] >= 1.0
    with pytest.raises(ValueError, match="window_step"):
        write(tmp_path / "bad", window_step=0)
