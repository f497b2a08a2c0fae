"""Video temporal grounding (seed 001): find when a sentence happens in a video.

JSONL, one object per line (blank lines are ignored; problems name the 1-based line number)::

    {"video": "videos/a.mp4", "duration": 24.9, "timestamp": [11.3, 15.0], "sentence": "...",
     "qid": "...", "video_start": 404.2, "video_end": 429.1, "difficulty": 24.65, "pred": [0.0, 15.01],
     "any_other_key": ...}

Required: ``video`` (relative to ``video_dir`` or absolute), ``duration`` (seconds, > 0),
``timestamp [s, e]`` (seconds), ``sentence``. Optional: ``video_start`` / ``video_end``
(absolute seconds in the file: the clip is trimmed to them), ``qid``, ``difficulty``, ``pred``.

Time frame: ``duration`` is the length of the *trimmed* clip and ``timestamp`` is relative to its
start, i.e. ``0 <= s < e <= duration`` (the seed's example: ``video_start`` 404.2, ``video_end``
429.1, ``duration`` 24.9 = 429.1 - 404.2, ``timestamp`` [11.3, 15.0] inside it). The answer the
model learns and ``Sample.target`` are in the same frame: ``target = {"timestamp": [s, e]`` (seconds,
clamped to the clip), ``"duration"``, ``"relative"``, ``"num_bins"``, ``"temporal_tokens"}`` (the
last three say how the answer is written, for :func:`parse_span`).

Every row field except ``duration`` / ``timestamp`` (which go to ``target``) is copied to
``Sample.metadata`` under its own name (``video``, ``sentence``, ``qid``, ``video_start``,
``difficulty``, ``pred``, unknown keys), plus ``annotation_file`` and ``annotation_line``.
``Sample.id`` is the ``qid`` (``"<file stem>:<line>"`` without one, or when it repeats).

Answer formats (:class:`TemporalFormat`, :func:`format_span`):

* absolute: ``<answer>11.3 to 15.0</answer>``, seconds from the clip start, one decimal;
* relative: ``<answer>0.45 to 0.60</answer>``, ``b / num_bins`` for the bins of :func:`span_bins`,
  with :func:`relative_decimals` decimals;
* temporal tokens: ``<answer><45> to <60></answer>``, the same bins as tokens ``<0>``..``<999>``
  (:mod:`vlmlab.models.temporal_tokens` adds them to the tokenizer).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlmlab.data.base import OnBadSample, Split, VisionLanguageDataModule
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sample import Sample
from vlmlab.data.video import VideoError, VideoFrames, clip_frames, open_video, read_video

log = logging.getLogger(__name__)

__all__ = [
    "NUM_TEMPORAL_TOKENS",
    "TemporalFormat",
    "VTGDataModule",
    "VTGDataset",
    "check_row",
    "format_span",
    "grounding_prompt",
    "parse_span",
    "read_rows",
    "relative_decimals",
    "sample_ids",
    "span_bins",
    "validate_file",
]

REQUIRED = ("video", "duration", "timestamp", "sentence")
OPTIONAL = ("video_start", "video_end", "qid", "difficulty", "pred")
# Keys the loader adds to Sample.metadata; a row may not use them (its value would be lost).
BOOKKEEPING = ("annotation_file", "annotation_line")
NUM_TEMPORAL_TOKENS = 1000  # <0> .. <999>
TIMESTAMP_TOLERANCE = 1e-3  # seconds: 0 <= s < e <= duration, up to float noise in the annotations


def duration_tolerance(duration: float) -> float:
    """How far an annotated duration may be from the video's (trimmed) length: 0.5 s or 5%.

    Container durations and annotation tools round differently; a larger gap means the
    timestamps are in another time frame than the clip the model sees.
    """
    return max(0.5, 0.05 * duration)


@dataclass(frozen=True)
class TemporalFormat:
    """How timestamps are written in prompts and answers (the seed's ``temporal:`` section).

    use_relative_timestamps: fractions of the clip (0-1) quantised to ``num_bins``; else seconds.
    num_bins: bins of the relative scale: a time ``t`` becomes ``round(t / duration * num_bins)``,
        one of ``0..num_bins`` (ignored for absolute seconds).
    use_temporal_tokens: write the bins as tokens ``<b>`` (needs relative timestamps and
        ``num_bins <= 999``, the last token being ``<999>``).
    """

    use_relative_timestamps: bool = True
    num_bins: int = 100
    use_temporal_tokens: bool = False

    def __post_init__(self) -> None:
        if self.num_bins < 1:
            raise ValueError(f"temporal num_bins must be >= 1, got {self.num_bins}")
        if self.use_temporal_tokens and not self.use_relative_timestamps:
            raise ValueError(
                "use_temporal_tokens needs use_relative_timestamps=true (tokens are bins of the clip)"
            )
        if self.use_temporal_tokens and self.num_bins > NUM_TEMPORAL_TOKENS - 1:
            raise ValueError(
                f"use_temporal_tokens needs num_bins <= {NUM_TEMPORAL_TOKENS - 1} (bins 0..num_bins are tokens "
                f"<0>..<{NUM_TEMPORAL_TOKENS - 1}>), got {self.num_bins}"
            )


def relative_decimals(num_bins: int) -> int:
    """Decimals of a relative time: the fewest (at least 2) that write every ``b / num_bins`` exactly, at most 4.

    100 bins -> 2 ("0.45"), 1000 or 500 -> 3, 64 -> 4 (rounded).
    """
    for decimals in (2, 3, 4):
        if 10**decimals % num_bins == 0:
            return decimals
    return 4


def span_bins(start: float, end: float, duration: float, num_bins: int) -> tuple[int, int]:
    """Quantise a span of seconds to bins ``0..num_bins``: ``floor(t / duration * num_bins + 0.5)``.

    Rounds half up and clamps to the clip. A span shorter than a bin keeps one bin of length
    (end bin >= start bin + 1) so the answer is never an empty span.
    """

    def to_bin(t: float) -> int:
        return min(num_bins, max(0, math.floor(t / duration * num_bins + 0.5)))

    b_start, b_end = to_bin(start), to_bin(end)
    if b_end <= b_start:
        b_start, b_end = (b_start, b_start + 1) if b_start < num_bins else (num_bins - 1, num_bins)
    return b_start, b_end


def format_span(start: float, end: float, duration: float, temporal: TemporalFormat) -> str:
    """The answer text for the span ``[start, end]`` seconds of a clip of ``duration`` seconds."""
    if not temporal.use_relative_timestamps:
        return f"<answer>{start:.1f} to {end:.1f}</answer>"
    b_start, b_end = span_bins(start, end, duration, temporal.num_bins)
    if temporal.use_temporal_tokens:
        return f"<answer><{b_start}> to <{b_end}></answer>"
    d = relative_decimals(temporal.num_bins)
    return f"<answer>{b_start / temporal.num_bins:.{d}f} to {b_end / temporal.num_bins:.{d}f}</answer>"


_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_SPAN = re.compile(rf"<answer>\s*(<?)\s*({_NUMBER})\s*>?\s*to\s*<?\s*({_NUMBER})\s*>?\s*</answer>", re.DOTALL)


def parse_span(text: str, duration: float, temporal: TemporalFormat) -> tuple[float, float] | None:
    """The span ``(start, end)`` in seconds of the last ``<answer>S to E</answer>`` in ``text``, or None.

    Reads the format of :func:`format_span`: seconds, relative fractions, or temporal tokens
    ``<b>`` (bin ``b`` is ``b / num_bins`` of the clip). Never raises; the span may be reversed or
    outside the clip (rewards judge that).
    """
    try:
        matches = list(_SPAN.finditer(str(text)))
        if not matches:
            return None
        token, s, e = matches[-1].groups()
        start, end = float(s), float(e)
        if not temporal.use_relative_timestamps:
            return start, end
        if token:  # <b> tokens are bin indices
            start, end = start / temporal.num_bins, end / temporal.num_bins
        return start * duration, end * duration
    except (ValueError, OverflowError):
        return None


def grounding_prompt(sentence: str, duration: float, temporal: TemporalFormat) -> str:
    """The user's question: localise ``sentence`` and answer in the configured format."""
    if temporal.use_temporal_tokens:
        how = (
            f"as temporal tokens from <0> (start of the video) to <{temporal.num_bins}> (end of the video), "
            "in the form <answer><S> to <E></answer>"
        )
    elif temporal.use_relative_timestamps:
        d = relative_decimals(temporal.num_bins)
        how = (
            f"as fractions of the video's length from 0 to 1 with {d} decimals, "
            "in the form <answer>S to E</answer>"
        )
    else:
        how = "in seconds with one decimal, in the form <answer>S to E</answer>"
    return (
        f'The video is {duration:.1f} seconds long. When does this happen: "{sentence}"? '
        f"Give the start S and the end E of the moment {how}."
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_span(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)


def resolve(video: str, video_dir: Path) -> Path:
    path = Path(video)
    return path if path.is_absolute() else video_dir / path


def _check_video(
    row: dict[str, Any], video_path: Path, decode: bool, bad: Callable[[str, str], None]
) -> None:
    """File existence; with ``decode``, open it, check the trim and duration, decode the clip's end frames."""
    if not video_path.is_file():
        bad("video", f"video file not found: {video_path}")
        return
    if not decode:
        return
    try:
        reader = open_video(video_path)
    except VideoError as error:
        bad("video", str(error))
        return
    total, native_fps = len(reader), float(reader.get_avg_fps())
    start, end = row.get("video_start"), row.get("video_end")
    try:
        _, _, clip_start, clip_end = clip_frames(total, native_fps, start, end)
    except ValueError as error:
        bad("video_start" if start is not None else "video_end", f"{video_path}: {error}")
        return
    if end is not None and end > total / native_fps + duration_tolerance(end - (start or 0.0)):
        bad("video_end", f"{end} s is beyond the end of the video ({total / native_fps:.3f} s): {video_path}")
    if _is_number(row.get("duration")):
        length = clip_end - clip_start
        if abs(row["duration"] - length) > duration_tolerance(length):
            trimmed = "trimmed " if start is not None or end is not None else ""
            bad(
                "duration", f"{row['duration']} s but the {trimmed}video is {length:.3f} s long: {video_path}"
            )
    try:  # the clip's first and last frames (2 uniform frames), through the reader training uses
        read_video(video_path, VideoFrames(max_frames=2, height=None, width=None), start, end)
    except VideoError as error:
        bad("video", str(error))


def check_row(row: Any, line: int, path: Path, video_dir: Path, decode: bool = False) -> list[DataProblem]:
    """Every problem of one row (fields, types, ranges, the video file).

    decode: also open the video with decord, check that the trim lies in it and ``duration``
    matches the (trimmed) clip, and decode the clip's first and last frames.
    """
    problems: list[DataProblem] = []

    def bad(field: str, problem: str) -> None:
        problems.append(DataProblem(str(path), line, field, problem))

    if not isinstance(row, dict):
        bad("row", f"expected a JSON object, got {type(row).__name__}")
        return problems
    for key in REQUIRED:
        if key not in row or row[key] is None:
            bad(key, "missing (required: video, duration, timestamp, sentence)")
    for key in BOOKKEEPING:
        if key in row:
            bad(
                key,
                "this name is reserved for the loader's metadata (annotation file / line); rename the key",
            )
    video, duration, span, sentence = (row.get(k) for k in REQUIRED)
    if video is not None and not (isinstance(video, str) and video.strip()):
        bad("video", "expected a non-empty path string")
    if sentence is not None and not (isinstance(sentence, str) and sentence.strip()):
        bad("sentence", "expected a non-empty string")
    duration_ok = False
    if duration is not None:
        if not _is_number(duration):
            bad("duration", f"expected a number of seconds, got {duration!r}")
        elif duration <= 0:
            bad("duration", f"must be > 0, got {duration}")
        else:
            duration_ok = True
    if span is not None:
        if not _is_span(span):
            bad("timestamp", f"expected [start, end] seconds, got {span!r}")
        elif not span[0] < span[1]:
            bad("timestamp", f"start must be < end, got {list(span)}")
        elif span[0] < -TIMESTAMP_TOLERANCE:
            bad("timestamp", f"start must be >= 0, got {list(span)}")
        elif duration_ok and span[1] > duration + TIMESTAMP_TOLERANCE:
            bad(
                "timestamp",
                f"end {span[1]} is beyond the duration {duration} "
                "(timestamps are seconds from the start of the trimmed clip)",
            )
    start, end = row.get("video_start"), row.get("video_end")
    trim_ok = True
    for key, value in (("video_start", start), ("video_end", end)):
        if value is not None and not (_is_number(value) and value >= 0):
            bad(key, f"expected seconds >= 0 in the file, got {value!r}")
            trim_ok = False
    if trim_ok and start is not None and end is not None:
        if not start < end:
            bad("video_end", f"video_start ({start}) must be < video_end ({end})")
            trim_ok = False
        elif duration_ok and abs(duration - (end - start)) > duration_tolerance(end - start):
            bad(
                "duration",
                f"{duration} s but video_end - video_start = {end - start:.3f} s "
                "(duration is the length of the trimmed clip)",
            )
    if row.get("qid") is not None and (not isinstance(row["qid"], str | int) or isinstance(row["qid"], bool)):
        bad("qid", f"expected a string, got {type(row['qid']).__name__}")
    if row.get("difficulty") is not None and not _is_number(row["difficulty"]):
        bad("difficulty", f"expected a number, got {row['difficulty']!r}")
    if row.get("pred") is not None and not _is_span(row["pred"]):
        bad("pred", f"expected [start, end] seconds, got {row['pred']!r}")
    if isinstance(video, str) and video.strip():
        _check_video(row, resolve(video, video_dir), decode and trim_ok, bad)
    return problems


def read_rows(path: Path) -> tuple[list[tuple[int, Any]], list[DataProblem]]:
    """``(line, object)`` for every non-blank line that is JSON, and a problem for each that is not.

    Raises DataError when the file itself is missing or unreadable.
    """
    if not path.is_file():
        raise DataError.one(path, "-", "file", "annotation file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError.one(path, "-", "file", f"cannot read: {error}") from error
    rows, problems = [], []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rows.append((line, json.loads(raw)))
        except json.JSONDecodeError as error:
            problems.append(DataProblem(str(path), line, "json", f"{error.msg} (column {error.colno})"))
    return rows, problems


def check_file(
    path: Path, video_dir: Path, decode: bool = False
) -> tuple[list[tuple[int, Any]], list[DataProblem]]:
    """Rows of a seed-001 JSONL file and every problem in them."""
    rows, problems = read_rows(path)
    for line, row in rows:
        problems += check_row(row, line, path, video_dir, decode)
    problems.sort(key=lambda p: p.row if isinstance(p.row, int) else 0)
    return rows, problems


def sample_ids(rows: list[tuple[int, Any]], path: Path) -> list[str]:
    """``Sample.id`` of each row: its ``qid``, or ``"<file stem>:<line>"`` when it has none or shares it.

    Real sets repeat a qid (the same sentence twice in one video); ids must be unique, so repeated
    qids give way to line ids (the qid stays in metadata) and the count is logged.
    """
    qids = [str(row["qid"]) if row.get("qid") is not None else None for _, row in rows]
    counts: dict[str, int] = {}
    for qid in qids:
        if qid is not None:
            counts[qid] = counts.get(qid, 0) + 1
    repeated = sum(n for n in counts.values() if n > 1)
    if repeated:
        log.warning("%s: %d rows share a qid with another row; their ids are <file>:<line>", path, repeated)
    return [
        qid if qid is not None and counts[qid] == 1 else f"{path.stem}:{line}"
        for qid, (line, _) in zip(qids, rows, strict=True)
    ]


def validate_file(
    path: str | Path, decode: bool = True, video_dir: str | Path | None = None
) -> list[DataProblem]:
    """Every problem of a seed-001 JSONL file, or of every ``*.jsonl`` in a folder.

    ``python -m vlmlab.tools.validate vtg PATH``. video_dir: where relative ``video`` paths start
    (default: the annotation file's folder, the layout of the synthetic set and of ``data.root``).
    """
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        return [DataProblem(str(path), "-", "file", "no *.jsonl annotation file in this folder")]
    problems: list[DataProblem] = []
    for file in files:
        try:
            problems += check_file(file, Path(video_dir) if video_dir is not None else file.parent, decode)[1]
        except DataError as error:
            problems += error.problems
    return problems


def keep_good_lines(
    rows: list[tuple[int, Any]], problems: list[DataProblem], on_bad_sample: OnBadSample, path: Path
) -> list[tuple[int, Any]]:
    """:func:`vlmlab.data.base.keep_good_rows` for rows named by line number rather than list index.

    ``rows`` are the lines that parsed; lines that did not are among ``problems`` (field ``json``).
    """
    if not problems:
        return rows
    if on_bad_sample == "raise":
        raise DataError(problems)
    bad = {p.row for p in problems}
    for problem in problems:
        log.warning("skipping bad sample: %s", problem)
    total = len({line for line, _ in rows} | bad)
    log.warning("%s: skipped %d of %d rows (data.on_bad_sample=skip)", path, len(bad), total)
    return [(line, row) for line, row in rows if line not in bad]


class VTGDataset(Dataset):
    """Rows of one seed-001 JSONL file, checked at construction (fields, files exist), decoded lazily.

    ``frames.sampling == "random"`` draws its frames from torch's RNG, so ``seed_everything``
    (which seeds every dataloader worker) makes it reproducible.
    """

    def __init__(
        self,
        path: str | Path,
        video_dir: str | Path | None = None,
        frames: VideoFrames | None = None,
        temporal: TemporalFormat | None = None,
        on_bad_sample: OnBadSample = "raise",
    ):
        self.path = Path(path)
        self.video_dir = Path(video_dir) if video_dir is not None else self.path.parent
        self.frames = frames or VideoFrames()
        self.temporal = temporal or TemporalFormat()
        rows, problems = check_file(self.path, self.video_dir)
        self.rows = keep_good_lines(rows, problems, on_bad_sample, self.path)
        self.ids = sample_ids(self.rows, self.path)
        self.skipped = len({p.row for p in problems})  # rows dropped (on_bad_sample=skip)

    def __len__(self) -> int:
        return len(self.rows)

    def sample_costs(self) -> list[float]:
        """Batching cost of each sample: its clip duration in seconds (seed 001 duration batching)."""
        return self.durations()

    def durations(self) -> list[float]:
        """Clip duration (seconds) of every item, in index order (for duration bucketing)."""
        return [float(row["duration"]) for _, row in self.rows]

    def __getitem__(self, i: int) -> Sample:
        line, row = self.rows[i]
        rng = None
        if self.frames.sampling == "random":
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        try:
            video = read_video(
                resolve(row["video"], self.video_dir),
                self.frames,
                row.get("video_start"),
                row.get("video_end"),
                rng,
            )
        except VideoError as error:
            raise DataError.one(self.path, line, "video", str(error)) from error
        return to_sample(row, line, self.path, video.frames, video.fps, self.temporal, self.ids[i])


def to_sample(
    row: dict[str, Any],
    line: int,
    path: Path,
    frames: np.ndarray,
    fps: float,
    temporal: TemporalFormat,
    sample_id: str,
) -> Sample:
    """A checked row and its decoded frames (uint8 [T, H, W, 3] at ``fps``) to the sample contract."""
    duration = float(row["duration"])
    # Within tolerance of the clip (checked): clamp the float noise away.
    start = min(max(float(row["timestamp"][0]), 0.0), duration)
    end = min(max(float(row["timestamp"][1]), start), duration)
    metadata = {k: v for k, v in row.items() if k not in ("duration", "timestamp")}
    metadata.update(annotation_file=str(path), annotation_line=line)
    return Sample(
        id=sample_id,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": frames, "fps": fps},
                    {"type": "text", "text": grounding_prompt(row["sentence"], duration, temporal)},
                ],
            }
        ],
        target={
            "timestamp": [start, end],
            "duration": duration,
            "relative": temporal.use_relative_timestamps,
            "num_bins": temporal.num_bins,
            "temporal_tokens": temporal.use_temporal_tokens,
        },
        answer=format_span(start, end, duration, temporal),
        metadata=metadata,
    )


class VTGDataModule(VisionLanguageDataModule):
    """Temporal grounding from videos: ``frames`` says how a clip becomes frames, ``temporal`` how times are written.

    video_dir: where relative ``video`` paths start (default: ``root``).
    synth_cases: training clips of the synthetic set (``preset=tiny``).
    "random" frame sampling is a training augmentation: val / test use "uniform" instead.
    """

    def __init__(
        self,
        frames: VideoFrames | None = None,
        temporal: TemporalFormat | None = None,
        video_dir: str | None = None,
        train_file: str | None = "train.jsonl",
        val_file: str | None = "val.jsonl",
        test_file: str | None = "test.jsonl",
        synth_cases: int = 32,
        **kwargs: Any,
    ):
        super().__init__(train_file=train_file, val_file=val_file, test_file=test_file, **kwargs)
        self.frames = frames or VideoFrames()
        self.temporal = temporal or TemporalFormat()
        self.video_dir = Path(video_dir) if video_dir is not None else self.root
        self.synth_cases = synth_cases

    def build_dataset(self, path: Path) -> VTGDataset:
        frames = self.frames
        if frames.sampling == "random" and path != self.split_path("train"):
            frames = replace(frames, sampling="uniform")
        return VTGDataset(path, self.video_dir, frames, self.temporal, self.on_bad_sample)

    def durations(self, split: Split) -> list[float]:
        """Clip durations of ``split`` in dataset order (builds the split if ``setup`` has not)."""
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self.sample_costs(split)

    def write_synthetic(self, root: Path) -> None:
        from vlmlab.data.synthetic.vtg import write

        write(root, num_train=self.synth_cases)
