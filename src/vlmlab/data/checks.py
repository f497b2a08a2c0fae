"""Start-of-run checks: what ``data.check`` reads, and how their problems meet ``data.on_bad_sample``.

Two levels, one meaning everywhere:

``headers`` (training's default)
    structure and types of every row, files that exist, headers (a volume's rank and shape, a video
    file present, an image that carries bytes or names a file): cheap, whatever the dataset's size.
``full`` (the validator's default)
    also decodes what a sample shows: every voxel of every volume (NaN / inf, and a tumour in a
    BraTS segmentation), every mp4's first and last frame of the clip a row uses (and its trim and
    duration), every image of an MCQA row, every camera of every LeRobot frame.

Each source has ONE function that reads a place at a level and returns its :class:`Checked` items
(``ct_report.check_file``, ``vtg.check_file``, ``mcqa.check_file``, ``brats.check_cases``,
``lerobot.LeRobotFrames.checked``). ``python -m vlmlab.tools.validate`` prints their problems
(:func:`problems_of`); a datamodule's setup passes ``data.check`` to the same function and applies the
bad-sample policy to what it returns (:func:`start_of_run`), so the validator and training agree on
every row. A sample that passes ``headers`` but fails to decode is handled later, at decode time
(:class:`~vlmlab.data.base.SampleDataset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from vlmlab.data.errors import Checked, DataError, DataProblem, OnBadSample, SkipLedger, keep_good

__all__ = ["CHECKS", "Check", "check_level", "decodes", "level_of", "problems_of", "start_of_run"]

Check = Literal["headers", "full"]
CHECKS: tuple[Check, ...] = ("headers", "full")


def check_level(check: str) -> Check:
    """``data.check`` validated (a config typo fails at construction, not after an hour of decoding)."""
    if check not in CHECKS:
        raise ValueError(f"data.check={check!r}; expected 'headers' or 'full'")
    return check  # type: ignore[return-value]


def decodes(check: Check) -> bool:
    """Whether a check at this level decodes samples (the readers' ``decode`` flag)."""
    return check_level(check) == "full"


def level_of(decode: bool) -> Check:
    """The level of a validator's ``decode`` flag (``--no-decode`` is ``headers``)."""
    return "full" if decode else "headers"


def problems_of(read: Callable[[], Sequence[Checked]]) -> list[DataProblem]:
    """Every problem of the places ``read`` checks, place by place; a place that cannot be read at all
    (its DataError) gives that error's problems."""
    try:
        checks = read()
    except DataError as error:
        return list(error.problems)
    return [p for checked in checks for p in checked.all_problems()]


def start_of_run(
    split: str, checks: Sequence[Checked], on_bad_sample: OnBadSample, root: Path
) -> tuple[list[list[Any]], SkipLedger]:
    """The bad-sample policy over a split's checked places: the items kept per place, and the split's
    ledger (every row read, the rows dropped) that ``data.max_bad_fraction`` bounds.

    ``raise``: one DataError with every place's problems at once. ``skip``: the bad rows are dropped,
    logged and counted.
    """
    problems = [p for checked in checks for p in checked.all_problems()]
    if problems and on_bad_sample == "raise":
        raise DataError(problems)
    kept = [keep_good(checked, on_bad_sample) for checked in checks]
    where = ", ".join(str(checked.where) for checked in checks) or str(root)
    # A row that never became an item (a line that is not JSON) is still a row read.
    rows = sum(len(c.items) + len({p.row for p in c.unattached}) for c in checks)
    dropped = rows - sum(len(k) for k in kept)
    return kept, SkipLedger(split, where, rows, problems[:5], dropped)
