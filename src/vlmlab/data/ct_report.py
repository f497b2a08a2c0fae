"""3D CT/MRI report generation (seed 000).

A JSON list of ``{"id", "messages", "videos"}``: the user turn holds one ``<video>`` placeholder per
entry of ``videos`` (``.npy`` volumes ``[1,T,H,W]`` or ``[T,H,W]``, paths relative to the JSON file
or absolute); the assistant turn holds the report. Volumes become uint8 frames by
:class:`vlmlab.data.volume.VolumeFrames`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vlmlab.data.base import OnBadSample, VisionLanguageDataModule, keep_good_rows
from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.sample import Sample
from vlmlab.data.sampler import estimate_vision_tokens
from vlmlab.data.volume import VolumeError, VolumeFrames, load_volume

VIDEO_PLACEHOLDER = "<video>"


def check_row(row: Any, index: int, path: Path, decode: bool = False) -> list[DataProblem]:
    """Every problem of one row of a seed-000 JSON list (structure, placeholders, volume files).

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


def resolve(video: str, annotation_file: Path) -> Path:
    path = Path(video)
    return path if path.is_absolute() else annotation_file.parent / path


def to_sample(row: dict[str, Any], index: int, path: Path, frames: VolumeFrames) -> Sample:
    """A checked row to the sample contract: the last assistant turn is the answer."""
    *prompt_turns, answer_turn = _split_answer(row["messages"])
    volumes = iter(row.get("videos", []))
    messages = []
    for message in prompt_turns:
        content: list[dict[str, Any]] = []
        for k, text in enumerate(message["content"].split(VIDEO_PLACEHOLDER)):
            if k > 0:
                volume_path = resolve(next(volumes), path)
                try:
                    video = frames(load_volume(volume_path))
                except VolumeError as error:
                    raise DataError.one(path, index, "videos", str(error)) from error
                content.append({"type": "video", "video": video, "fps": frames.fps})
                text = text.removeprefix("\n")
            if text:
                content.append({"type": "text", "text": text})
        messages.append({"role": message["role"], "content": content})
    return Sample(
        id=str(row["id"]),
        messages=messages,
        target={"report": answer_turn["content"]},
        answer=answer_turn["content"],
        metadata={"source": str(path), "row": index, "videos": row.get("videos", [])},
    )


def _split_answer(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return [*messages[:last], messages[last]]


def read_rows(path: Path) -> list[Any]:
    """The JSON list of a seed-000 file, or a DataError naming the file and the line."""
    if not path.is_file():
        raise DataError.one(path, "-", "file", "annotation file not found")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError.one(path, f"line {error.lineno}", "json", error.msg) from error
    if not isinstance(rows, list):
        raise DataError.one(path, "-", "json", "expected a JSON list of samples")
    return rows


def validate_file(path: str | Path, decode: bool = True) -> list[DataProblem]:
    """Every problem of a seed-000 JSON file (``python -m vlmlab.tools.validate ct_report PATH``)."""
    path = Path(path)
    try:
        rows = read_rows(path)
    except DataError as error:
        return error.problems
    return [p for i, row in enumerate(rows) for p in check_row(row, i, path, decode)]


class CTReportDataset(Dataset):
    """Rows of one seed-000 JSON file, checked at construction (headers only), decoded lazily."""

    def __init__(self, path: str | Path, frames: VolumeFrames, on_bad_sample: OnBadSample = "raise"):
        self.path = Path(path)
        self.frames = frames
        rows = read_rows(self.path)
        problems = [p for i, row in enumerate(rows) for p in check_row(row, i, self.path)]
        self.indices = keep_good_rows(list(range(len(rows))), problems, on_bad_sample, self.path)
        self.rows = rows
        self.skipped = len(rows) - len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def sample_costs(self) -> list[float]:
        """Estimated vision tokens of each kept row (frames x resolution, from the volume headers)."""
        costs = []
        for index in self.indices:
            tokens = 0
            for video in self.rows[index].get("videos", []):
                slices, height, width = load_volume(resolve(video, self.path), header_only=True).shape
                frames = slices if self.frames.num_frames is None else min(slices, self.frames.num_frames)
                h, w = self.frames.size if self.frames.size is not None else (height, width)
                tokens += estimate_vision_tokens(frames, h, w)
            costs.append(float(tokens))
        return costs

    def __getitem__(self, i: int) -> Sample:
        index = self.indices[i]
        return to_sample(self.rows[index], index, self.path, self.frames)


class CTReportDataModule(VisionLanguageDataModule):
    """Report generation from volumes; ``frames`` says how a volume becomes video frames."""

    def __init__(self, frames: VolumeFrames, synth_cases: int = 48, **kwargs: Any):
        super().__init__(**kwargs)
        self.frames = frames
        self.synth_cases = synth_cases

    def build_dataset(self, path: Path) -> CTReportDataset:
        return CTReportDataset(path, self.frames, self.on_bad_sample)

    def write_synthetic(self, root: Path) -> None:
        from vlmlab.data.synthetic.ct_report import write

        write(root, num_train=self.synth_cases)
