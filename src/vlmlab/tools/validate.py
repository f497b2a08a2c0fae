"""Check a dataset before training: required fields and types, files that exist and decode, values in range.

Usage::

    python -m vlmlab.tools.validate {ct_report,brats,vtg,lerobot,mcqa} PATH [--check {full,headers}]

Prints one ``PATH:ROW: field: problem`` line per problem and exits 1 if there is any (0 if none).
``--check full`` (the default) decodes everything it checks: every voxel of every volume (NaN / inf,
a tumour in each segmentation), every mp4's first and last frame (of the clip a row uses), every MCQA
image, every camera of every LeRobot frame; ``--check headers`` (or ``--no-decode``) reads structure
and headers only. Training runs the very same check at start, at the level ``data.check`` (default
``headers``; ``data.check=full`` gives this tool's default), and applies ``data.on_bad_sample`` to its
problems. Each format's check is the ``validate_file(path, decode)`` function of its data package, on
the check function its datamodule calls (see :mod:`vlmlab.data.checks`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vlmlab.data import brats, ct_report, lerobot, mcqa, vtg
from vlmlab.data.checks import CHECKS, decodes
from vlmlab.data.errors import DataProblem

VALIDATORS: dict[str, Callable[..., list[DataProblem]]] = {
    "ct_report": ct_report.validate_file,
    "brats": brats.validate_file,
    "vtg": vtg.validate_file,
    "lerobot": lerobot.validate_file,
    "mcqa": mcqa.validate_file,
}
FORMATS = tuple(VALIDATORS)


def validator(fmt: str) -> Callable[..., list[DataProblem]]:
    if fmt not in VALIDATORS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return VALIDATORS[fmt]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmlab.tools.validate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("path", type=Path, help="annotation file or dataset folder")
    parser.add_argument(
        "--check",
        choices=CHECKS,
        default="full",
        help="full: decode every voxel, video end frame, image and camera frame (default); headers: "
        "structure and headers only (training's default data.check)",
    )
    parser.add_argument(
        "--no-decode", dest="check", action="store_const", const="headers", help="same as --check headers"
    )
    args = parser.parse_args(argv)
    problems = validator(args.format)(args.path, decode=decodes(args.check))
    for problem in problems:
        print(problem)
    print(f"{args.path}: {len(problems)} problem(s)" if problems else f"{args.path}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
