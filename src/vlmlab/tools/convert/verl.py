"""Rows -> verl's RL parquet (``convert_verl_format.py``)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.mcqa import base_dir_of, check_row, encoded_image
from vlmlab.tasks.mcqa import format_prompt, parse_options, present_options
from vlmlab.tools.convert.chunks import Chunk, chunks_of, open_table, run_chunks, write_parquet

IMAGE_PLACEHOLDER = "<image>"  # verl's RLHFDataset splits user text on it into image items


def verl_features() -> Any:
    """``datasets.Features`` of verl's RL parquet (as its examples/data_preprocess/geo3k.py writes it)."""
    import datasets

    string = datasets.Value("string")
    return datasets.Features(
        {
            "data_source": string,
            "prompt": datasets.List({"role": string, "content": string}),
            "images": datasets.List(datasets.Image()),
            "ability": string,
            "reward_model": {"style": string, "ground_truth": string},
            "extra_info": {
                "split": string,
                "index": datasets.Value("int64"),
                "dataset_name": string,
                "dataset_index": datasets.Value("int64"),
                "answer_label": string,
                "answer": string,
                "question": string,
            },
        }
    )


def verl_prompt(question: str, options: dict[str, str | None], num_images: int) -> str:
    """The user text for verl: one ``<image>`` per image, then the training prompt.

    verl splits the text on ``<image>`` into ``[image, ..., text]`` items, which the chat template
    renders exactly as the training prompt's image items followed by its text item.
    """
    return IMAGE_PLACEHOLDER * num_images + format_prompt(question, options)


def _verl_chunk(
    chunk: Chunk, data_source: str, ability: str, split: str
) -> tuple[pa.Table, list[DataProblem]]:
    base_dir = base_dir_of(chunk.source)
    rows, errors = [], []
    for i, record in enumerate(chunk.records(), start=chunk.start):
        problems = check_row(record, i, chunk.source, decode=True, base_dir=base_dir)
        if problems:
            errors += problems
            continue
        options = present_options(parse_options(record["options"]))
        rows.append(
            {
                "data_source": data_source,
                "prompt": [
                    {
                        "role": "user",
                        "content": verl_prompt(record["question"], options, len(record["images"])),
                    }
                ],
                "images": [
                    {"bytes": encoded_image(item, base_dir), "path": None} for item in record["images"]
                ],
                "ability": ability,
                "reward_model": {"style": "rule", "ground_truth": record["answer_label"]},
                "extra_info": {
                    "split": split,
                    "index": chunk.offset + (i - chunk.start),
                    "dataset_name": record["dataset_name"],
                    "dataset_index": record["dataset_index"],
                    "answer_label": record["answer_label"],
                    "answer": record["answer"],
                    "question": record["question"],
                },
            }
        )
    return pa.Table.from_pylist(rows, schema=verl_features().arrow_schema), errors


def to_verl(
    local_data_dir: str | Path,
    data_source: str,
    output_dir: str | Path,
    ability: str = "medical_mcqa",
    split: str = "train",
    num_proc: int = 1,
) -> Path:
    """Rows -> ``output_dir/{split}.parquet`` in verl's RL format; returns that file.

    Columns: ``data_source``; ``prompt`` = ``[{"role": "user", "content": "<image>...<image>" +
    training prompt}]``; ``images`` = ``[{"bytes", "path"}]`` (``datasets.Image`` storage, which
    verl's ``process_image`` opens); ``ability``; ``reward_model`` = ``{"style": "rule",
    "ground_truth": answer letter}``; ``extra_info`` = ``{"split", "index" (row position),
    "dataset_name", "dataset_index", "answer_label", "answer", "question"}``. Every image is decoded
    once to check it; any bad row stops the conversion.
    """
    table = open_table(local_data_dir)
    work = partial(_verl_chunk, data_source=data_source, ability=ability, split=split)
    results = run_chunks(work, chunks_of(table), num_proc)
    errors = [p for _, found in results for p in found]
    if errors:
        raise DataError(errors)
    out = Path(output_dir) / f"{split}.parquet"
    count = write_parquet([t for t, _ in results], out)
    print(f"[verl] wrote {count} row(s) to {out}")
    return out
