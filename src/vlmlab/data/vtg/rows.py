"""Rows of a grounding JSONL file: read, check, and name.

One JSON object per line (blank lines are ignored; problems name the 1-based line number)::

    {"video": "videos/a.mp4", "duration": 24.9, "timestamp": [11.3, 15.0], "sentence": "...",
     "qid": "...", "video_start": 404.2, "video_end": 429.1, "difficulty": 24.65, "pred": [0.0, 15.01],
     "any_other_key": ...}

Required: ``video`` (relative to ``video_dir`` or absolute), ``duration`` (seconds, > 0),
``timestamp [s, e]`` (seconds), ``sentence``. Optional: ``video_start`` / ``video_end``
(absolute seconds in the file: the clip is trimmed to them), ``qid``, ``difficulty``, ``pred``.

Time frame: ``duration`` is the length of the *trimmed* clip and ``timestamp`` is relative to its
start, i.e. ``0 <= s < e <= duration`` (the grounding recipe's example: ``video_start`` 404.2,
``video_end`` 429.1, ``duration`` 24.9 = 429.1 - 404.2, ``timestamp`` [11.3, 15.0] inside it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmlab.data.checks import Check, decodes, level_of, problems_of
from vlmlab.data.errors import Checked, DataProblem
from vlmlab.data.files import read_jsonl
from vlmlab.data.video import VideoError, VideoFrames, clip_frames, open_video, read_video

log = logging.getLogger(__name__)

__all__ = [
    "BOOKKEEPING",
    "OPTIONAL",
    "REQUIRED",
    "VTGRow",
    "check_file",
    "check_row",
    "read_rows",
    "sample_ids",
    "validate_file",
]

REQUIRED = ("video", "duration", "timestamp", "sentence")
OPTIONAL = ("video_start", "video_end", "qid", "difficulty", "pred")
# Keys the loader adds to Sample.metadata; a row may not use them (its value would be lost).
BOOKKEEPING = ("annotation_file", "annotation_line")
TIMESTAMP_TOLERANCE = 1e-3  # seconds: 0 <= s < e <= duration, up to float noise in the annotations


@dataclass(frozen=True)
class VTGRow:
    """Line ``line`` of the JSONL file ``path``: its JSON value ``row`` and its ``Sample.id``.

    video_dir: where a relative ``video`` path starts.
    training: a row of the training split (its clip may be decoded with random frame sampling).
    """

    path: Path
    line: int
    row: Any
    id: str
    video_dir: Path
    training: bool = False

    def video_path(self) -> Path:
        return resolve(self.row["video"], self.video_dir)


def resolve(video: str, video_dir: Path) -> Path:
    path = Path(video)
    return path if path.is_absolute() else video_dir / path


def duration_tolerance(duration: float) -> float:
    """How far an annotated duration may be from the video's (trimmed) length: 0.5 s or 5%.

    Container durations and annotation tools round differently; a larger gap means the
    timestamps are in another time frame than the clip the model sees.
    """
    return max(0.5, 0.05 * duration)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_span(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)


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


def sample_ids(rows: list[tuple[int, Any]], path: Path) -> list[str]:
    """``Sample.id`` of each ``(line, row)``: its ``qid``, or ``"<file stem>:<line>"`` when it has none
    or shares it.

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


def read_rows(
    path: Path, video_dir: Path | None = None, decode: bool = False, training: bool = False
) -> Checked[VTGRow]:
    """The rows of a JSONL file, each row's problems, and a problem for each line that is not JSON
    (unattached). A DataError when the file itself cannot be read.

    video_dir: where relative ``video`` paths start (default: the file's folder).
    decode: check the videos by decoding them (:func:`check_row`).
    training: mark the rows as training rows (:attr:`VTGRow.training`).
    Ids (:func:`sample_ids`) are those of the rows that pass their checks, the rows a datamodule
    keeps under either bad-sample policy; a bad row's id is its line id.
    """
    video_dir = video_dir if video_dir is not None else path.parent
    rows, unattached = read_jsonl(path)
    problems = [check_row(row, line, path, video_dir, decode) for line, row in rows]
    good = [pair for pair, found in zip(rows, problems, strict=True) if not found]
    ids = dict(zip((line for line, _ in good), sample_ids(good, path), strict=True))
    items = [
        VTGRow(path, line, row, ids.get(line, f"{path.stem}:{line}"), video_dir, training)
        for line, row in rows
    ]
    return Checked(path, items, problems, unattached)


def check_file(
    path: str | Path, check: Check = "headers", video_dir: str | Path | None = None, training: bool = False
) -> list[Checked[VTGRow]]:
    """The start-of-run check of a grounding JSONL file, the validator's and training's (``data.check``):
    ``headers`` checks every row's fields and that its video file exists; ``full`` also opens each
    video, checks the trim and the duration against it, and decodes the clip's first and last frames
    (:func:`check_row`). A DataError when the file itself cannot be read.

    video_dir: where relative ``video`` paths start (default: the file's folder). training: the rows
    are the training split's (:attr:`VTGRow.training`).
    """
    start = Path(video_dir) if video_dir is not None else None
    return [read_rows(Path(path), start, decodes(check), training)]


def validate_file(
    path: str | Path, decode: bool = True, video_dir: str | Path | None = None
) -> list[DataProblem]:
    """Every problem of a grounding JSONL file, or of every ``*.jsonl`` in a folder.

    ``python -m vlmlab.tools.validate vtg PATH``. video_dir: where relative ``video`` paths start
    (default: the annotation file's folder, the layout of the synthetic set and of ``data.root``).
    """
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        return [DataProblem(str(path), "-", "file", "no *.jsonl annotation file in this folder")]
    return [
        p for file in files for p in problems_of(lambda f=file: check_file(f, level_of(decode), video_dir))
    ]
