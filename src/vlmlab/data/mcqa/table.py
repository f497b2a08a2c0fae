"""The sources of a multiple-choice VQA split, read as Arrow tables (images stay encoded).

A split names parquet files (one file, a glob such as ``train-*.parquet``, or a folder searched
recursively) or a Hugging Face ``datasets`` folder written by ``save_to_disk`` (e.g. by
``python -m vlmlab.tools.convert hf``).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlmlab.data.errors import DataError
from vlmlab.data.mcqa.images import ByteCount
from vlmlab.tasks.mcqa import OPTION_LETTERS

__all__ = [
    "MCQATable",
    "base_dir_of",
    "find_sources",
    "is_hf_dataset_dir",
    "read_source",
    "trainset_features",
]

# A folder written by ``datasets.Dataset.save_to_disk`` holds these two files beside its .arrow shards.
HF_DATASET_FILES = ("state.json", "dataset_info.json")
_GLOB_CHARS = set("*?[")


def trainset_features() -> Any:
    """``datasets.Features`` of the MCQA recipe's trainset format as vlmlab writes it.

    Images are ``List(Image())`` (stored as ``{"bytes", "path"}`` structs, decoded to PIL by
    ``datasets``); options are a struct with one nullable string per letter A..E.
    """
    import datasets  # heavy; only the writers need it

    string = datasets.Value("string")
    return datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "question": string,
            "options": {letter: string for letter in OPTION_LETTERS},
            "answer_label": string,
            "answer": string,
            "reasoning": string,
            "dataset_name": string,
            "dataset_index": datasets.Value("int64"),
        }
    )


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in HF_DATASET_FILES)


def find_sources(spec: str | Path) -> list[Path]:
    """The parquet files and ``save_to_disk`` folders that ``spec`` names, sorted; [] if none.

    spec: a parquet file, a ``save_to_disk`` folder, a folder of parquet files (searched
    recursively), or a glob of any of these.
    """
    text = str(spec)
    candidates = [Path(p) for p in sorted(glob.glob(text))] if _GLOB_CHARS & set(text) else [Path(text)]
    found: list[Path] = []
    for path in candidates:
        if is_hf_dataset_dir(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(path.rglob("*.parquet"))
        elif path.is_file():
            found.append(path)
    return list(dict.fromkeys(found))


def read_source(path: Path, keep_in_memory: bool = False) -> pa.Table:
    """One source as an Arrow table (a parquet file, or a ``save_to_disk`` folder memory-mapped).

    Images stay encoded (``{"bytes", "path"}`` structs): nothing is decoded here.
    """
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise DataError.one(
                path, "-", "file", f"a DatasetDict; point at one split folder: {', '.join(splits)}"
            )
        if not is_hf_dataset_dir(path):
            raise DataError.one(path, "-", "file", "not a parquet file nor a datasets.save_to_disk folder")
        import datasets  # heavy; only needed for saved datasets

        try:
            dataset = datasets.load_from_disk(str(path), keep_in_memory=keep_in_memory)
        except (OSError, ValueError) as error:
            raise DataError.one(path, "-", "file", f"cannot load the saved dataset: {error}") from error
        return dataset.with_format("arrow")[:]
    try:
        return pq.read_table(path, memory_map=not keep_in_memory)
    except (OSError, pa.ArrowException) as error:
        raise DataError.one(path, "-", "file", f"not a readable parquet file: {error}") from error


def base_dir_of(source: Path) -> Path:
    """The folder relative image paths of a source are read from."""
    return source if source.is_dir() else source.parent


def _byte_counts(values: pa.Array) -> list[Any]:
    """Byte counts of binary values; other values (a ``bytes`` field that pyarrow typed ``null``
    because every item is a path, or a wrong type) as Python values for the checks to judge."""
    if not (pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type)):
        return values.to_pylist()
    return [None if n is None else ByteCount(n) for n in pc.binary_length(values).to_pylist()]


def _image_stubs(column: pa.ChunkedArray) -> list[Any]:
    """Per row, the ``images`` value with every encoded image replaced by its byte count (no copies).

    list<struct<bytes, path>> -> [{"bytes": n | None, "path": str | None}, ...]; list<binary> -> [n, ...]
    (n a :class:`ByteCount`); anything else (paths, wrong types) as Python values.
    """
    stubs: list[Any] = []
    for chunk in column.chunks:
        if not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)):
            stubs += chunk.to_pylist()
            continue
        values = chunk.flatten()  # the items of the non-null lists, in order
        item_type = chunk.type.value_type
        if pa.types.is_struct(item_type) and item_type.get_field_index("bytes") >= 0:
            nbytes = _byte_counts(pc.struct_field(values, "bytes"))
            has_path = item_type.get_field_index("path") >= 0
            paths = pc.struct_field(values, "path").to_pylist() if has_path else [None] * len(values)
            valid = values.is_valid().to_pylist()
            items = [
                {"bytes": n, "path": p} if ok else None for n, p, ok in zip(nbytes, paths, valid, strict=True)
            ]
        else:
            items = _byte_counts(values)
        lengths = pc.list_value_length(chunk).to_pylist()
        start = 0
        for length in lengths:
            if length is None:
                stubs.append(None)
            else:
                stubs.append(items[start : start + length])
                start += length
    return stubs


class MCQATable:
    """The rows of every source a spec names, read lazily from Arrow tables.

    Errors name the source (parquet file or saved-dataset folder) and the row index within it.
    """

    def __init__(self, spec: str | Path, keep_in_memory: bool = False):
        self.spec = str(spec)
        paths = find_sources(spec)
        if not paths:
            raise DataError.one(spec, "-", "file", "no parquet file or datasets.save_to_disk folder found")
        self.sources: list[tuple[Path, pa.Table]] = [(p, read_source(p, keep_in_memory)) for p in paths]

    def __len__(self) -> int:
        return sum(table.num_rows for _, table in self.sources)

    def row(self, source: int, index: int) -> dict[str, Any]:
        """Row ``index`` of source ``source`` as a Python dict (image bytes included)."""
        return self.sources[source][1].slice(index, 1).to_pylist()[0]

    def summaries(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(source, row, record) for every row, with image bytes replaced by their length (cheap)."""
        for s, (_, table) in enumerate(self.sources):
            stubs = _image_stubs(table.column("images")) if "images" in table.column_names else None
            light = table.drop_columns(["images"]) if stubs is not None else table
            for i, record in enumerate(light.to_pylist()):
                if stubs is not None:
                    record["images"] = stubs[i]
                yield s, i, record

    def rows(self, batch_size: int = 64) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(source, row, record) for every row with its images, a few rows in memory at a time."""
        for s, (_, table) in enumerate(self.sources):
            i = 0
            for batch in table.to_batches(max_chunksize=batch_size):
                for record in batch.to_pylist():
                    yield s, i, record
                    i += 1
