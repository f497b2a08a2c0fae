"""Convert seed-004 multiple-choice VQA data for other trainers (the seed's ``data_process`` scripts).

Usage::

    # parquet rows -> a datasets.save_to_disk folder with images as bytes (prep_to_hf_bytes.py)
    python -m vlmlab.tools.convert hf --parquet_glob "DIR/*.parquet" --out_dir DIR_hf \\
        [--num_proc 32] [--strict_image] [--keep_first_k_images 6]
    # -> verl's RL parquet: OUT/{split}.parquet (convert_verl_format.py)
    python -m vlmlab.tools.convert verl --local_data_dir DIR_hf --data_source NAME \\
        --ability medical_mcqa --split train --output_dir DIR_verl [--num_proc 32]
    # -> TRL's vision prompt/completion parquet (convert_trl_for_vlm.py)
    python -m vlmlab.tools.convert trl [--is_local true] -d DIR_hf --tokenizer_name qwen2_5_vl \\
        --out_parquet DIR_trl/train.parquet [-n 16] [--keep_in_memory true]

Every input is read like the ``mcqa`` data source reads it (a parquet file, glob or folder, or a
``save_to_disk`` folder) and checked the same way: a malformed row stops the conversion with one
``PATH:ROW: field: problem`` line per problem (exit status 1); nothing is dropped silently. The
prompts are the training prompts of :mod:`vlmlab.data.mcqa` (same text, same answer format), so a
model trained here, with verl or with TRL sees the same questions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from vlmlab.data.errors import DataError, DataProblem
from vlmlab.data.mcqa import (
    OPTION_LETTERS,
    ImageProblem,
    MCQATable,
    base_dir_of,
    check_fields,
    check_images,
    check_row,
    encoded_image,
    format_answer,
    format_prompt,
    parse_options,
    present_options,
    read_source,
    trainset_features,
    verify_image,
)

T = TypeVar("T")

IMAGE_PLACEHOLDER = "<image>"  # verl's RLHFDataset splits user text on it into image items
TOKENIZER_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
CHUNK_ROWS = 512  # rows per work item for --num_proc


# ---------------------------------------------------------------------------------- parallel map


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


def _open(spec: str | Path, keep_in_memory: bool = False) -> MCQATable:
    table = MCQATable(spec, keep_in_memory=keep_in_memory)
    if len(table) == 0:
        raise DataError.one(spec, "-", "rows", "the dataset is empty")
    return table


def _write_parquet(rows: list[pa.Table], path: Path) -> int:
    table = pa.concat_tables(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return table.num_rows


def _options_struct(options: Any) -> dict[str, str | None]:
    shown = present_options(parse_options(options))
    return {letter: shown.get(letter) for letter in OPTION_LETTERS}


# ------------------------------------------------------------------------------------------- hf


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
                "options": _options_struct(record["options"]),
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
    table = _open(parquet_glob)
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


# ----------------------------------------------------------------------------------------- verl


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
    table = _open(local_data_dir)
    work = partial(_verl_chunk, data_source=data_source, ability=ability, split=split)
    results = run_chunks(work, chunks_of(table), num_proc)
    errors = [p for _, found in results for p in found]
    if errors:
        raise DataError(errors)
    out = Path(output_dir) / f"{split}.parquet"
    count = _write_parquet([t for t, _ in results], out)
    print(f"[verl] wrote {count} row(s) to {out}")
    return out


# ------------------------------------------------------------------------------------------ trl


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
    table = _open(dataset, keep_in_memory)
    work = partial(_trl_chunk, tokenizer=tokenizer)
    results = run_chunks(work, chunks_of(table, keep_in_memory=keep_in_memory), num_proc)
    errors = [p for *_, found in results for p in found]
    if errors:
        raise DataError(errors)
    counts = [n for _, found, _ in results for n in found]
    out = Path(out_parquet)
    rows = _write_parquet([t for t, *_ in results], out)
    print(
        f"[trl] wrote {rows} row(s) to {out}; text tokens per conversation "
        f"min {min(counts)} / median {statistics.median(counts):g} / max {max(counts)}"
    )
    return TRLReport(out, rows, counts)


# ------------------------------------------------------------------------------------------ cli


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vlmlab.tools.convert", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    hf = sub.add_parser("hf", help="parquet rows -> datasets.save_to_disk folder, images as bytes")
    hf.add_argument("--parquet_glob", required=True, help="parquet file, glob, or folder")
    hf.add_argument("--out_dir", required=True, type=Path, help="the save_to_disk folder to write")
    hf.add_argument("--num_proc", type=int, default=1)
    hf.add_argument("--strict_image", action="store_true", help="an image that does not decode is an error")
    hf.add_argument("--keep_first_k_images", type=int, default=None, help="keep the first K images of a row")

    verl = sub.add_parser("verl", help="rows -> verl RL parquet OUTPUT_DIR/{split}.parquet")
    verl.add_argument(
        "--local_data_dir", required=True, help="save_to_disk folder (or parquet file/glob/folder)"
    )
    verl.add_argument("--data_source", required=True, help="verl's data_source column (selects the reward)")
    verl.add_argument("--ability", default="medical_mcqa")
    verl.add_argument("--split", default="train")
    verl.add_argument("--output_dir", required=True, type=Path)
    verl.add_argument("--num_proc", type=int, default=1)

    trl = sub.add_parser("trl", help="rows -> TRL vision prompt/completion parquet")
    trl.add_argument("--is_local", type=_boolean, nargs="?", const=True, default=True, help="must be true")
    trl.add_argument(
        "-d", "--dataset", required=True, help="save_to_disk folder (or parquet file/glob/folder)"
    )
    trl.add_argument(
        "--tokenizer_name",
        required=True,
        help=f"local tokenizer folder or one of {', '.join(TOKENIZER_FAMILIES)}",
    )
    trl.add_argument("--out_parquet", required=True, type=Path)
    trl.add_argument("-n", "--num_proc", type=int, default=1)
    trl.add_argument("--keep_in_memory", type=_boolean, nargs="?", const=True, default=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    convert = {"hf": to_hf, "verl": to_verl, "trl": to_trl}[command]
    try:
        convert(**args)
    except DataError as error:
        print(error, file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
