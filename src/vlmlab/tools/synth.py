"""Write a small synthetic dataset of one format, with its ground truth visible in the pixels.

Usage::

    python -m vlmlab.tools.synth {ct_report,brats,vtg,lerobot,mcqa} OUT_DIR [--options]

Each format is a ``write(out_dir, **options) -> dict[str, Path]`` function of
:mod:`vlmlab.data.synthetic`; its keyword arguments become ``--options``
(``num_train`` -> ``--num-train``). The folder gets the stamp ``synthetic.json`` (the writer and its
arguments, :mod:`vlmlab.data.synthetic.folder`), so that ``data.root=OUT_DIR`` with ``data.synthesize``
on checks it against the run's ``data.synth_*``.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from pathlib import Path

from vlmlab.data.synthetic import brats, ct_report, lerobot, mcqa, vtg
from vlmlab.data.synthetic.folder import SyntheticRecipe

WRITERS: dict[str, Callable[..., dict[str, Path]]] = {
    "ct_report": ct_report.write,
    "brats": brats.write,
    "vtg": vtg.write,
    "lerobot": lerobot.write,
    "mcqa": mcqa.write,
}
FORMATS = tuple(WRITERS)


def writer(fmt: str) -> Callable[..., dict[str, Path]]:
    """The synthetic writer of ``fmt``."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return WRITERS[fmt]


def _add_writer_options(parser: argparse.ArgumentParser, write: Callable[..., dict[str, Path]]) -> None:
    """One ``--kebab-case`` option per keyword argument of ``write`` (after ``out_dir``)."""
    for name, param in list(inspect.signature(write).parameters.items())[1:]:
        flag = "--" + name.replace("_", "-")
        default = param.default
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, default=default, action=argparse.BooleanOptionalAction)
        elif isinstance(default, tuple):  # e.g. --shape 48 56 40
            parser.add_argument(
                flag,
                dest=name,
                type=type(default[0]),
                nargs=len(default),
                default=default,
                help=f"default {default}",
            )
        else:
            parser.add_argument(
                flag, dest=name, type=type(default), default=default, help=f"default {default}"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlmlab.tools.synth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="format", required=True)
    for fmt in FORMATS:
        write = writer(fmt)
        summary = (write.__doc__ or "").strip().splitlines()[0] if write.__doc__ else None
        p = sub.add_parser(fmt, help=summary, description=summary)
        p.add_argument("out_dir", type=Path)
        _add_writer_options(p, write)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    write = writer(args.pop("format"))
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k != "out_dir"}
    for split, path in SyntheticRecipe(write, options).write(args["out_dir"]).items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
