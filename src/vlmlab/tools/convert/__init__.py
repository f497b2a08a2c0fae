"""Convert multiple-choice VQA data for other trainers (the MCQA recipe's ``data_process`` scripts).

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

:mod:`.hf`, :mod:`.verl` and :mod:`.trl` hold one converter each, :mod:`.chunks` the parallel
reading they share. Every input is read like the ``mcqa`` data source reads it (a parquet file, glob or folder, or a
``save_to_disk`` folder) and checked the same way: a malformed row stops the conversion with one
``PATH:ROW: field: problem`` line per problem (exit status 1); nothing is dropped silently. The
prompts are the training prompts of :mod:`vlmlab.tasks.mcqa` (same text, same answer format), so a
model trained here, with verl or with TRL sees the same questions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlmlab.data.errors import DataError
from vlmlab.tools.convert.hf import HFReport, to_hf
from vlmlab.tools.convert.trl import TOKENIZER_FAMILIES, TRLReport, load_tokenizer, to_trl, trl_features
from vlmlab.tools.convert.verl import to_verl, verl_features, verl_prompt

__all__ = [
    "HFReport",
    "TRLReport",
    "build_parser",
    "load_tokenizer",
    "main",
    "to_hf",
    "to_trl",
    "to_verl",
    "trl_features",
    "verl_features",
    "verl_prompt",
]


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
