"""Parquet rows -> a ``datasets.save_to_disk`` folder with images as bytes (``prep_to_hf_bytes.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pyarrow as pa

from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.mcqa import (
    ImageProblem,
    base_dir_of,
    check_fields,
    check_images,
    encoded_image,
    trainset_features,
    verify_image,
)
from vlmlab.tools.convert.chunks import Chunk, chunks_of, open_table, options_struct, run_chunks


@dataclass
class HFReport:
    """What :func:`to_hf` did: rows read and written, images removed and rows dropped (non-strict)."""

    out_dir: Path
    rows_in: int
    rows_out: int
    removed_images: list[DataProblem] = field(default_factory=list)
    dropped_rows: list[DataProblem] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)


def _hf_chunk(
    chunk: Chunk, strict_image: bool, keep_first_k_images: int | None
) -> tuple[pa.Table, list[DataProblem], list[DataProblem], list[DataProblem]]:
    """(rows, errors, removed images, dropped rows) of one chunk in the trainset format."""
    base_dir = base_dir_of(chunk.source)
    rows, errors, removed, dropped = [], [], [], []
    for i, record in enumerate(chunk.records(), start=chunk.start):
        problems = check_fields(record, i, chunk.source)
        images = record.get("images")
        if not isinstance(images, list) or not images:
            errors += problems + check_images(images, i, chunk.source, decode=False)
            continue
        kept = []
        for k, item in enumerate(images[:keep_first_k_images] if keep_first_k_images else images):
            try:
                data = encoded_image(item, base_dir)
                verify_image(data)
            except ImageProblem as error:
                (problems if strict_image else removed).append(
                    DataProblem(str(chunk.source), i, f"images[{k}]", str(error))
                )
                continue
            kept.append({"bytes": data, "path": None})
        if problems:
            errors += problems
            continue
        if not kept:
            dropped.append(DataProblem(str(chunk.source), i, "images", "no image decodes: row dropped"))
            continue
        rows.append(
            {
                "images": kept,
                "question": record["question"],
                "options": options_struct(record["options"]),
                "answer_label": record["answer_label"],
                "answer": record["answer"],
                "reasoning": record.get("reasoning"),
                "dataset_name": record["dataset_name"],
                "dataset_index": record["dataset_index"],
            }
        )
    table = pa.Table.from_pylist(rows, schema=trainset_features().arrow_schema)
    return table, errors, removed, dropped


def to_hf(
    parquet_glob: str,
    out_dir: str | Path,
    num_proc: int = 1,
    strict_image: bool = False,
    keep_first_k_images: int | None = None,
) -> HFReport:
    """Parquet rows -> a ``datasets.save_to_disk`` folder; images stored as bytes (``List(Image())``).

    Every image is read (bytes, path or PIL) and decoded once. An image that does not decode is an
    error naming file, row and field with ``strict_image``; without it the image is removed, and a
    row left without any image is dropped: both are counted and printed. Rows with malformed fields
    are always errors. keep_first_k_images: keep only the first K images of a row (before decoding).
    Options become a struct A..E (None where absent); columns outside the format are dropped (printed).
    """
    if keep_first_k_images is not None and keep_first_k_images < 1:
        raise ValueError(f"keep_first_k_images={keep_first_k_images}; expected >= 1")
    table = open_table(parquet_glob)
    print(f"[hf] matched {len(table.sources)} source(s), {len(table)} row(s)")
    known = set(trainset_features())
    extra = sorted({c for _, arrow in table.sources for c in arrow.column_names} - known)
    if extra:
        print(f"[hf] dropping column(s) outside the trainset format: {', '.join(extra)}")
    work = partial(_hf_chunk, strict_image=strict_image, keep_first_k_images=keep_first_k_images)
    results = run_chunks(work, chunks_of(table), num_proc)
    errors = [p for _, found, _, _ in results for p in found]
    if errors:
        raise DataError(errors)
    report = HFReport(
        out_dir=Path(out_dir),
        rows_in=len(table),
        rows_out=sum(t.num_rows for t, *_ in results),
        removed_images=[p for *_, found, _ in results for p in found],
        dropped_rows=[p for *_, found in results for p in found],
        dropped_columns=extra,
    )
    _print_removed(report)
    if report.rows_out == 0:
        raise DataError.one(parquet_glob, "-", "rows", "no row left to save")
    import datasets  # heavy; only this step needs it

    dataset = datasets.Dataset(pa.concat_tables([t for t, *_ in results]))
    report.out_dir.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(report.out_dir))
    print(f"[hf] saved {report.rows_out} row(s) to {report.out_dir}")
    return report


def _print_removed(report: HFReport, shown: int = 20) -> None:
    for what, problems in (
        ("image(s) that do not decode", report.removed_images),
        ("row(s)", report.dropped_rows),
    ):
        if problems:
            print(f"[hf] removed {len(problems)} {what} (--strict_image makes this an error):")
            for problem in problems[:shown]:
                print(f"  {problem}")
            if len(problems) > shown:
                print(f"  ... and {len(problems) - shown} more")
