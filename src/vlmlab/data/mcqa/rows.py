"""Rows of a multiple-choice VQA split: check, read into checked items, decode into samples.

Each row is the MCQA recipe's trainset format::

    images         list of image items (:mod:`.images`)
    question       str
    options        {"A": str, ..., "E": str}; a missing, None or blank option is not shown. A JSON
                   string of that dict is accepted too (the MCQA recipe's converter writes one)
    answer_label   the correct letter, one of the options shown
    answer         str, the full answer text (kept in metadata)
    reasoning      optional str, a chain of thought
    dataset_name   str, the source benchmark (kept in ``target`` for per-dataset accuracy)
    dataset_index  int, the row's identifier within its source

The prompt and the SFT answer are :mod:`vlmlab.tasks.mcqa`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmlab.data.checks import Check, decodes, level_of, problems_of
from vlmlab.data.errors import Checked, DataError, DataProblem
from vlmlab.data.mcqa.images import ImageProblem, image_reference_problem, load_image
from vlmlab.data.mcqa.table import MCQATable, base_dir_of
from vlmlab.data.sample import Sample
from vlmlab.tasks.mcqa import MCQATarget, format_answer, format_prompt, parse_options, present_options

__all__ = [
    "REQUIRED_FIELDS",
    "MCQARow",
    "check_fields",
    "check_file",
    "check_images",
    "check_row",
    "read_rows",
    "to_sample",
    "validate_file",
]

REQUIRED_FIELDS = ("images", "question", "options", "answer_label", "answer", "dataset_name", "dataset_index")


def check_fields(row: Any, index: int | str, path: Path | str) -> list[DataProblem]:
    """Every problem of a row's non-image fields (required keys, types, answer_label among the options)."""
    problems: list[DataProblem] = []

    def bad(field: str, problem: str) -> None:
        problems.append(DataProblem(str(path), index, field, problem))

    if not isinstance(row, dict):
        bad("row", f"expected a record, got {type(row).__name__}")
        return problems
    for key in REQUIRED_FIELDS:
        if key != "images" and row.get(key) is None:
            bad(key, "missing")
    question = row.get("question")
    if question is not None and (not isinstance(question, str) or not question.strip()):
        bad("question", "expected a non-empty string")
    for key in ("answer", "dataset_name"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            bad(key, f"expected a string, got {type(value).__name__}")
    if isinstance(row.get("dataset_name"), str) and not row["dataset_name"].strip():
        bad("dataset_name", "expected a non-empty string")
    reasoning = row.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, str):
        bad("reasoning", f"expected a string or null, got {type(reasoning).__name__}")
    index_value = row.get("dataset_index")
    if index_value is not None and (isinstance(index_value, bool) or not isinstance(index_value, int)):
        bad("dataset_index", f"expected an integer, got {type(index_value).__name__} {index_value!r}")
    shown: dict[str, str] = {}
    if row.get("options") is not None:
        try:
            shown = present_options(parse_options(row["options"]))
        except ValueError as error:
            bad("options", str(error))
        else:
            if len(shown) < 2:
                bad("options", f"expected at least 2 options, got {len(shown)}")
    label = row.get("answer_label")
    if label is not None:
        if not isinstance(label, str):
            bad("answer_label", f"expected a letter, got {type(label).__name__}")
        elif shown and label not in shown:
            bad("answer_label", f"{label!r} is not one of the options {', '.join(shown)}")
    return problems


def check_images(
    images: Any, index: int | str, path: Path | str, decode: bool, base_dir: Path | None = None
) -> list[DataProblem]:
    """Problems of a row's ``images``: a non-empty list whose every item is readable (decoded if asked)."""
    if not isinstance(images, list):
        got = "nothing" if images is None else type(images).__name__
        return [DataProblem(str(path), index, "images", f"expected a list of images, got {got}")]
    if not images:
        return [DataProblem(str(path), index, "images", "no image (an empty list)")]
    problems = []
    for k, item in enumerate(images):
        try:
            if decode:
                load_image(item, base_dir)
            else:
                problem = image_reference_problem(item, base_dir)
                if problem is not None:
                    raise ImageProblem(problem)
        except ImageProblem as error:
            problems.append(DataProblem(str(path), index, f"images[{k}]", str(error)))
    return problems


def check_row(
    row: Any, index: int | str, path: Path | str, decode: bool = False, base_dir: Path | None = None
) -> list[DataProblem]:
    """Every problem of one row of the trainset format.

    decode: decode every image (all must decode) rather than checking that each one carries bytes or
    names an existing file. base_dir: the folder relative image paths are read from.
    """
    problems = check_fields(row, index, path)
    if isinstance(row, dict):
        problems += check_images(row.get("images"), index, path, decode, base_dir)
    return problems


@dataclass(frozen=True, eq=False)
class MCQARow:
    """Row ``index`` of source ``source`` of ``table``, showing ``num_images`` images (before any cap)."""

    table: MCQATable
    source: int
    index: int
    num_images: int

    @property
    def path(self) -> Path:
        return self.table.sources[self.source][0]

    def record(self) -> dict[str, Any]:
        return self.table.row(self.source, self.index)


def read_rows(table: MCQATable, decode: bool = False) -> list[Checked[MCQARow]]:
    """The rows of every source of ``table`` with their problems, one :class:`Checked` per source.

    decode: decode every image (reads every byte); otherwise only check each image's reference.
    """
    checks = [Checked(path, [], []) for path, _ in table.sources]
    for s, i, record in table.rows() if decode else table.summaries():
        source = table.sources[s][0]
        images = record.get("images")
        count = len(images) if isinstance(images, list) else 0
        checks[s].items.append(MCQARow(table, s, i, count))
        checks[s].problems.append(check_row(record, i, source, decode=decode, base_dir=base_dir_of(source)))
    return checks


def check_file(spec: str | Path, check: Check = "headers") -> list[Checked[MCQARow]]:
    """The start-of-run check of an MCQA split, the validator's and training's (``data.check``), one
    :class:`Checked` per source: ``headers`` checks every row's fields and that each image carries
    bytes or names an existing file; ``full`` decodes every image. A DataError when a source cannot be
    read.

    spec: a parquet file, a glob, a folder of parquet files or a ``save_to_disk`` folder.
    """
    return read_rows(MCQATable(spec), decodes(check))


def validate_file(path: str | Path, decode: bool = True) -> list[DataProblem]:
    """Every problem of an MCQA dataset (``python -m vlmlab.tools.validate mcqa PATH``).

    path: a parquet file, a glob, a folder of parquet files or a ``save_to_disk`` folder.
    decode: decode every image; otherwise only check that each carries bytes or names a file.
    """
    return problems_of(lambda: check_file(path, level_of(decode)))


def sample_id(row: dict[str, Any]) -> str:
    return f"{row['dataset_name']}-{row['dataset_index']}"


def to_sample(
    row: dict[str, Any], index: int, path: Path, max_images: int | None = None, base_dir: Path | None = None
) -> Sample:
    """A checked row to the sample contract; images are decoded here (a broken one raises DataError).

    max_images: show only the first K images (None: all).
    """
    images = row["images"] if max_images is None else row["images"][:max_images]
    content: list[dict[str, Any]] = []
    for k, item in enumerate(images):
        try:
            content.append({"type": "image", "image": load_image(item, base_dir)})
        except ImageProblem as error:
            raise DataError.one(path, index, f"images[{k}]", str(error)) from error
    options = present_options(parse_options(row["options"]))
    content.append({"type": "text", "text": format_prompt(row["question"], options)})
    reasoning = row.get("reasoning")
    target = MCQATarget(row["answer_label"], options, row["dataset_name"], row["dataset_index"])
    return Sample(
        id=sample_id(row),
        messages=[{"role": "user", "content": content}],
        target=target.as_dict(),
        answer=format_answer(row["answer_label"], reasoning),
        metadata={
            "source": str(path),
            "row": index,
            "answer": row["answer"],
            "has_reasoning": bool(reasoning and reasoning.strip()),
            "num_images": len(row["images"]),
            "num_images_used": len(images),
        },
    )
