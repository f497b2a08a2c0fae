"""Reading a converter's input in chunks of rows, in parallel processes when asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from vlmlab.data.errors import DataError
from vlmlab.data.mcqa import MCQATable, read_source
from vlmlab.tasks.mcqa import OPTION_LETTERS, parse_options, present_options

T = TypeVar("T")

CHUNK_ROWS = 512  # rows per work item for --num_proc


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, stop)`` of one source; ``offset`` is the position of ``start`` over all sources."""

    source: Path
    start: int
    stop: int
    offset: int
    keep_in_memory: bool = False

    def records(self) -> list[dict[str, Any]]:
        table = read_source(self.source, self.keep_in_memory)
        return table.slice(self.start, self.stop - self.start).to_pylist()


def chunks_of(table: MCQATable, size: int = CHUNK_ROWS, keep_in_memory: bool = False) -> list[Chunk]:
    found, offset = [], 0
    for source, arrow in table.sources:
        for start in range(0, arrow.num_rows, size):
            stop = min(start + size, arrow.num_rows)
            found.append(Chunk(source, start, stop, offset + start, keep_in_memory))
        offset += arrow.num_rows
    return found


def run_chunks(work: Callable[[Chunk], T], chunks: Sequence[Chunk], num_proc: int) -> list[T]:
    """``work`` on every chunk, in order; in ``num_proc`` processes when more than one."""
    if num_proc <= 1 or len(chunks) <= 1:
        return [work(chunk) for chunk in chunks]
    with ProcessPoolExecutor(max_workers=min(num_proc, len(chunks))) as pool:
        return list(pool.map(work, chunks))


def open_table(spec: str | Path, keep_in_memory: bool = False) -> MCQATable:
    table = MCQATable(spec, keep_in_memory=keep_in_memory)
    if len(table) == 0:
        raise DataError.one(spec, "-", "rows", "the dataset is empty")
    return table


def write_parquet(rows: list[pa.Table], path: Path) -> int:
    table = pa.concat_tables(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table.num_rows


def options_struct(options: Any) -> dict[str, str | None]:
    shown = present_options(parse_options(options))
    return {letter: shown.get(letter) for letter in OPTION_LETTERS}
