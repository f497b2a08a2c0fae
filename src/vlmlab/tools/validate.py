"""Check a dataset before training: required fields and types, files that exist and decode, values in range.

Usage::

    python -m vlmlab.tools.validate {ct_report,brats,vtg,lerobot,mcqa} PATH [--no-decode]

Prints one ``PATH:ROW: field: problem`` line per problem and exits 1 if there is any (0 if none).
Training runs the same checks at start (``data.on_bad_sample``). Each format's checks are the
``validate_file(path, decode=True) -> list[DataProblem]`` function of its data package.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vlmlab.data import brats, ct_report, lerobot, mcqa, vtg
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
    parser.add_argument("--no-decode", dest="decode", action="store_false", help="check file headers only")
    args = parser.parse_args(argv)
    problems = validator(args.format)(args.path, decode=args.decode)
    for problem in problems:
        print(problem)
    print(f"{args.path}: {len(problems)} problem(s)" if problems else f"{args.path}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
