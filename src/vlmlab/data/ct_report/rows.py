"""Rows of a report-generation JSON file: read, check, decode.

A JSON list of ``{"id", "messages", "videos"}``: the user turn holds one ``<video>`` placeholder per
entry of ``videos`` (``.npy`` volumes ``[1,T,H,W]`` or ``[T,H,W]``, paths relative to the JSON file
or absolute); the assistant turn holds the report. Volumes become uint8 frames by
:class:`vlmlab.data.volume.VolumeFrames`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmlab.data.checks import Check, decodes, level_of, problems_of
from vlmlab.data.errors import Checked, DataError, DataProblem
from vlmlab.data.files import read_json
from vlmlab.data.sample import Sample
from vlmlab.data.volume import VolumeError, VolumeFrames, load_volume
from vlmlab.tasks.report import ReportTarget

__all__ = [
    "VIDEO_PLACEHOLDER",
    "ReportRow",
    "check_file",
    "check_row",
    "read_rows",
    "to_sample",
    "validate_file",
]

VIDEO_PLACEHOLDER = "<video>"


@dataclass(frozen=True)
class ReportRow:
    """Row ``index`` of the JSON file ``path``."""

    path: Path
    index: int
    row: Any

    def volume_paths(self) -> list[Path]:
        return [resolve(video, self.path) for video in self.row.get("videos", [])]


def resolve(video: str, annotation_file: Path) -> Path:
    path = Path(video)
    return path if path.is_absolute() else annotation_file.parent / path


def check_row(row: Any, index: int, path: Path, decode: bool = False) -> list[DataProblem]:
    """Every problem of one row (structure, placeholders, volume files).

    decode: read every voxel (finite values) rather than only the file header (existence, rank).
    """
    problems: list[DataProblem] = []

    def bad(field: str, problem: str) -> None:
        problems.append(DataProblem(str(path), index, field, problem))

    if not isinstance(row, dict):
        bad("row", f"expected an object, got {type(row).__name__}")
        return problems
    if not isinstance(row.get("id"), str | int):
        bad("id", "missing or not a string")
    messages, videos = row.get("messages"), row.get("videos", [])
    if not isinstance(videos, list) or not all(isinstance(v, str) for v in videos):
        bad("videos", "expected a list of .npy paths")
        videos = []
    if not isinstance(messages, list) or not messages:
        bad("messages", "expected a non-empty list of chat turns")
        return problems
    placeholders = 0
    for turn, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            bad(f"messages[{turn}]", "expected {'role': system|user|assistant, 'content': str}")
            continue
        if not isinstance(message.get("content"), str):
            bad(f"messages[{turn}].content", "expected a string")
            continue
        count = message["content"].count(VIDEO_PLACEHOLDER)
        if count and message["role"] != "user":
            bad(f"messages[{turn}].content", f"{VIDEO_PLACEHOLDER} is only allowed in a user turn")
        placeholders += count
    if placeholders != len(videos):
        bad(
            "messages",
            f"{placeholders} {VIDEO_PLACEHOLDER} placeholder(s) in user turns but {len(videos)} video(s)",
        )
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        bad("messages", "no assistant turn (the report)")
    for k, video in enumerate(videos):
        try:
            load_volume(resolve(video, path), header_only=not decode)
        except VolumeError as error:
            bad(f"videos[{k}]", str(error))
    return problems


def read_rows(path: Path, decode: bool = False) -> Checked[ReportRow]:
    """The rows of a JSON file and each row's problems (a DataError when the file itself is unusable)."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise DataError.one(path, "-", "json", "expected a JSON list of samples")
    items = [ReportRow(path, i, row) for i, row in enumerate(rows)]
    return Checked(path, items, [check_row(item.row, item.index, path, decode) for item in items])


def check_file(path: str | Path, check: Check = "headers") -> list[Checked[ReportRow]]:
    """The start-of-run check of a report JSON file, the validator's and training's (``data.check``):
    ``headers`` reads every row and each volume's header (existence, rank); ``full`` reads every
    voxel too (finite values). A DataError when the file itself is unusable."""
    return [read_rows(Path(path), decodes(check))]


def validate_file(path: str | Path, decode: bool = True) -> list[DataProblem]:
    """Every problem of a report JSON file (``python -m vlmlab.tools.validate ct_report PATH``)."""
    return problems_of(lambda: check_file(path, level_of(decode)))


def to_sample(item: ReportRow, frames: VolumeFrames) -> Sample:
    """A checked row to the sample contract: the last assistant turn is the answer."""
    row, messages = item.row, item.row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    volumes = iter(item.volume_paths())
    prompt: list[dict[str, Any]] = []
    for message in messages[:last]:
        content: list[dict[str, Any]] = []
        for k, text in enumerate(message["content"].split(VIDEO_PLACEHOLDER)):
            if k > 0:
                try:
                    video = frames(load_volume(next(volumes)))
                except VolumeError as error:
                    raise DataError.one(item.path, item.index, "videos", str(error)) from error
                content.append({"type": "video", "video": video, "fps": frames.fps})
                text = text.removeprefix("\n")
            if text:
                content.append({"type": "text", "text": text})
        prompt.append({"role": message["role"], "content": content})
    report = messages[last]["content"]
    return Sample(
        id=str(row["id"]),
        messages=prompt,
        target=ReportTarget(report).as_dict(),
        answer=report,
        metadata={"source": str(item.path), "row": item.index, "videos": row.get("videos", [])},
    )
