"""Rows -> TRL's vision prompt/completion parquet (``convert_trl_for_vlm.py``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.mcqa import base_dir_of, check_row, encoded_image
from vlmlab.tasks.mcqa import format_answer, format_prompt, parse_options, present_options
from vlmlab.tools.convert.chunks import Chunk, chunks_of, open_table, run_chunks, write_parquet

TOKENIZER_FAMILIES = ("qwen2_5_vl", "qwen3_vl")


@dataclass
class TRLReport:
    """What :func:`to_trl` wrote, with the text token count of each conversation (images as one pad each)."""

    out_parquet: Path
    rows: int
    token_counts: list[int]


def trl_features() -> Any:
    """``datasets.Features`` of TRL's conversational prompt/completion vision format."""
    import datasets

    string = datasets.Value("string")
    turns = datasets.List({"role": string, "content": datasets.List({"type": string, "text": string})})
    return datasets.Features(
        {
            "prompt": turns,
            "completion": turns,
            "images": datasets.List(datasets.Image()),
            "answer_label": string,  # TRL passes extra columns to GRPO reward functions
            "dataset_name": string,
            "dataset_index": datasets.Value("int64"),
        }
    )


def load_tokenizer(name: str) -> Any:
    """A tokenizer with a chat template, offline: a local folder, a hub id already in the local
    cache, or ``qwen2_5_vl`` / ``qwen3_vl`` for vlmlab's offline Qwen tokenizer."""
    if name in TOKENIZER_FAMILIES:
        from vlmlab.models.processor import offline_tokenizer

        return offline_tokenizer(name)  # type: ignore[arg-type]
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(Path(name).expanduser()), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--tokenizer_name {name!r}: not a local tokenizer folder nor a cached hub id "
            f"(nothing is downloaded); use a folder or one of {', '.join(TOKENIZER_FAMILIES)}"
        ) from error
    if not tokenizer.chat_template:
        raise ValueError(f"--tokenizer_name {name!r}: the tokenizer has no chat template")
    return tokenizer


def _trl_chunk(chunk: Chunk, tokenizer: Any) -> tuple[pa.Table, list[int], list[DataProblem]]:
    base_dir = base_dir_of(chunk.source)
    rows, counts, errors = [], [], []
    for i, record in enumerate(chunk.records(), start=chunk.start):
        problems = check_row(record, i, chunk.source, decode=True, base_dir=base_dir)
        if problems:
            errors += problems
            continue
        options = present_options(parse_options(record["options"]))
        images = record["images"]
        prompt = [
            {
                "role": "user",
                "content": [{"type": "image", "text": None} for _ in images]
                + [{"type": "text", "text": format_prompt(record["question"], options)}],
            }
        ]
        answer = format_answer(record["answer_label"], record.get("reasoning"))
        completion = [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        try:
            text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        # A chat template raises whatever jinja raises.
        except Exception as error:
            errors.append(DataProblem(str(chunk.source), i, "chat_template", f"does not render: {error}"))
            continue
        counts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        rows.append(
            {
                "prompt": prompt,
                "completion": completion,
                "images": [{"bytes": encoded_image(item, base_dir), "path": None} for item in images],
                "answer_label": record["answer_label"],
                "dataset_name": record["dataset_name"],
                "dataset_index": record["dataset_index"],
            }
        )
    return pa.Table.from_pylist(rows, schema=trl_features().arrow_schema), counts, errors


def to_trl(
    dataset: str | Path,
    tokenizer_name: str,
    out_parquet: str | Path,
    num_proc: int = 1,
    keep_in_memory: bool = False,
    is_local: bool = True,
) -> TRLReport:
    """Rows -> one parquet for TRL's vision trainers (SFTTrainer, GRPOTrainer); returns a report.

    Columns: ``prompt`` = ``[{"role": "user", "content": [{"type": "image"}, ..., {"type": "text",
    "text": training prompt}]}]``; ``completion`` = ``[{"role": "assistant", "content": [{"type":
    "text", "text": SFT answer}]}]``; ``images`` (``datasets.Image`` storage, loaded as PIL);
    ``answer_label``, ``dataset_name``, ``dataset_index``. The tokenizer's chat template renders
    every conversation (a row that does not render is an error) and the text token counts are
    printed. is_local: must be true; vlmlab never downloads (download the dataset first).
    """
    if not is_local:
        raise ValueError("--is_local false would download from the hub; download first and pass the folder")
    tokenizer = load_tokenizer(tokenizer_name)
    table = open_table(dataset, keep_in_memory)
    work = partial(_trl_chunk, tokenizer=tokenizer)
    results = run_chunks(work, chunks_of(table, keep_in_memory=keep_in_memory), num_proc)
    errors = [p for *_, found in results for p in found]
    if errors:
        raise DataError(errors)
    counts = [n for _, found, _ in results for n in found]
    out = Path(out_parquet)
    rows = write_parquet([t for t, *_ in results], out)
    print(
        f"[trl] wrote {rows} row(s) to {out}; text tokens per conversation "
        f"min {min(counts)} / median {statistics.median(counts):g} / max {max(counts)}"
    )
    return TRLReport(out, rows, counts)
