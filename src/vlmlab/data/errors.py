"""Bad input: problems that name the file, the row and the field, and the bad-sample policy.

Two moments find bad samples. At the start of a run the readers check every row (headers, fields)
and :func:`keep_good` applies ``data.on_bad_sample``. While a sample is decoded (voxels, frames,
image bytes) a reader raises a :class:`DataError`; under ``skip`` the dataset replaces the sample
and marks the replacement with a :class:`SkipNote` (:data:`SKIPPED_KEY` in its metadata), which a
:class:`SkipLedger` per split counts against ``data.max_bad_fraction``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

log = logging.getLogger(__name__)

OnBadSample = Literal["raise", "skip"]
Item = TypeVar("Item")

# "PATH:ROW: field: problem", ROW an index, "-" (the whole file) or "line N".
_PROBLEM = re.compile(r"^(?P<path>.+?):(?P<row>-|\d+|line \d+): (?P<field>[^:]*): (?P<problem>.*)$")
_HEADER = re.compile(r"^\d+ problem\(s\) in the data:$")
# The last line of a formatted traceback that starts a DataError's message.
_RAISED = re.compile(r"^(?:[\w.]+\.)?DataError: ", re.MULTILINE)
SHOWN = 20  # problems printed by a DataError


@dataclass(frozen=True)
class DataProblem:
    """One problem with one row: printed as ``PATH:ROW: field: problem``."""

    path: str
    row: int | str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.row}: {self.field}: {self.problem}"

    @classmethod
    def parse(cls, text: str) -> DataProblem:
        """A problem back from its printed line (a line that is not one becomes the ``problem``)."""
        match = _PROBLEM.match(text)
        if match is None:
            return cls("-", "-", "data", text)
        row = match["row"]
        return cls(match["path"], int(row) if row.isdigit() else row, match["field"], match["problem"])


class DataError(ValueError):
    """Bad input; carries every problem found so that all are reported at once.

    problems: the problems, or a message (how pickling and torch's DataLoader rebuild the error: a
    worker's exception is re-raised in the main process as ``DataError(formatted traceback)``; only
    the original message is kept, so the run stops with the same message as without workers).
    """

    def __init__(self, problems: list[DataProblem] | str):
        if isinstance(problems, str):
            message = _original_message(problems)
            lines = [line for line in message.splitlines() if line.strip()]
            if lines and _HEADER.match(lines[0]):
                lines = [line for line in lines[1:] if not line.startswith("... and ")]
            self.problems = [DataProblem.parse(line) for line in lines]
            super().__init__(message)
            return
        self.problems = list(problems)
        shown = "\n".join(str(p) for p in problems[:SHOWN])
        more = f"\n... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        super().__init__(f"{len(problems)} problem(s) in the data:\n{shown}{more}")

    @classmethod
    def one(cls, path: str | Path, row: int | str, field: str, problem: str) -> DataError:
        return cls([DataProblem(str(path), row, field, problem)])


def _original_message(text: str) -> str:
    """The message of the last DataError in a formatted traceback; ``text`` itself if there is none."""
    found = list(_RAISED.finditer(text))
    return text[found[-1].end() :].rstrip("\n") if found else text


class RowProblems(list[DataProblem]):
    """The problems of one row (or case) as they are found: ``add(path, field, problem)``, the row fixed."""

    def __init__(self, row: int | str):
        super().__init__()
        self.row = row

    def add(self, path: str | Path, field: str, problem: str) -> None:
        self.append(DataProblem(str(path), self.row, field, problem))


@dataclass
class Checked(Generic[Item]):
    """What a reader found in one place (a file, a folder): its items and each item's problems.

    items: the rows / cases / frames that could become samples.
    problems: one list per item (empty: the item passed its checks).
    unattached: problems of rows that never became items (a line that is not JSON, say).
    """

    where: Path
    items: list[Item]
    problems: list[list[DataProblem]]
    unattached: list[DataProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.problems) != len(self.items):
            raise ValueError(f"{len(self.problems)} problem lists for {len(self.items)} items")

    def all_problems(self) -> list[DataProblem]:
        """Every problem, in row order (a validator's report)."""
        every = [p for found in self.problems for p in found] + list(self.unattached)
        return sorted(every, key=lambda p: p.row if isinstance(p.row, int) else -1)


def keep_good(checked: Checked[Item], on_bad_sample: OnBadSample) -> list[Item]:
    """The bad-sample policy: ``raise`` every problem at once, or ``skip`` the bad items *and say so*."""
    problems = checked.all_problems()
    if not problems:
        return list(checked.items)
    if on_bad_sample == "raise":
        raise DataError(problems)
    for problem in problems:
        log.warning("skipping bad sample: %s", problem)
    kept = [item for item, found in zip(checked.items, checked.problems, strict=True) if not found]
    bad = len(checked.items) - len(kept) + len({p.row for p in checked.unattached})
    total = len(checked.items) + len({p.row for p in checked.unattached})
    log.warning("%s: skipped %d of %d rows (data.on_bad_sample=skip)", checked.where, bad, total)
    return kept


def check_policy(on_bad_sample: str) -> OnBadSample:
    if on_bad_sample not in ("raise", "skip"):
        raise ValueError(f"data.on_bad_sample={on_bad_sample!r}; expected 'raise' or 'skip'")
    return on_bad_sample  # type: ignore[return-value]


def problems_in(checks: Sequence[Checked]) -> list[DataProblem]:
    """Every problem of several places, place by place."""
    return [p for checked in checks for p in checked.all_problems()]


# ---------------------------------------------------------------------------- decode-time skips

SKIPPED_KEY = "skipped_sample"  # Sample.metadata key of a replacement's SkipNote


class SkipNote(str):
    """The problems (one ``PATH:ROW: field: problem`` line each) of a sample that failed to decode,
    carried in the metadata of the sample that replaced it.

    A ``str`` so that it crosses worker processes, collation and device transfer untouched (Lightning
    rebuilds dataclasses in a batch, and a frozen one would stop it), and a type of its own so that a
    row's own ``skipped_sample`` key (VTG copies unknown keys to metadata) is never taken for one.
    """

    @classmethod
    def of(cls, error: DataError) -> SkipNote:
        return cls("\n".join(str(p) for p in error.problems) or str(error))

    def problems(self) -> list[DataProblem]:
        return [DataProblem.parse(line) for line in self.splitlines() if line.strip()]


def next_good(index: int, count: int, decode: Callable[[int], Item], failed: dict[int, SkipNote]) -> Item:
    """``decode`` of the first index after ``index`` (wrapping around ``count`` items) that succeeds.

    failed: the indices known to fail, with their notes (``index`` among them; added to as more fail).
    """
    for step in range(1, count):
        other = (index + step) % count
        if other in failed:
            continue
        try:
            return decode(other)
        except DataError as error:
            failed[other] = SkipNote.of(error)
    problem = DataProblem("-", "-", "rows", f"none of the {count} samples decodes; the first:")
    raise DataError([problem, *failed[index].problems()])


def skip_notes(metadata: Iterable[Mapping[str, Any]]) -> list[SkipNote]:
    """The skip notes of a batch's per-sample metadata (one per sample that stands in for another)."""
    return [m[SKIPPED_KEY] for m in metadata if isinstance(m.get(SKIPPED_KEY), SkipNote)]


@dataclass
class SkipLedger:
    """The skipped samples of one split, against every row it read: what ``data.max_bad_fraction`` bounds.

    rows: rows read at start (kept and dropped). dropped: the problems of the rows dropped at start.
    dropped_rows: how many rows those are. skipped: the decode-time skips of the current epoch
    (``epoch``: whatever identifies it; :meth:`record` with another one starts a new count).
    """

    split: str
    where: str
    rows: int
    dropped: list[DataProblem] = field(default_factory=list)
    dropped_rows: int = 0
    epoch: Hashable = None
    skipped: list[SkipNote] = field(default_factory=list)

    def record(self, epoch: Hashable, notes: Sequence[SkipNote]) -> None:
        """Count ``notes`` in ``epoch`` and list each in the log (warning)."""
        if epoch != self.epoch:
            self.epoch, self.skipped = epoch, []
        self.skipped.extend(notes)
        for note in notes:
            log.warning(
                "skipped a %s sample that failed to decode (data.on_bad_sample=skip; replaced by the next "
                "good one): %s",
                self.split,
                note.replace("\n", "; "),
            )

    def count(self, epoch: Hashable) -> int:
        """Decode-time skips recorded in ``epoch`` (0 when none was recorded in it)."""
        return len(self.skipped) if epoch == self.epoch else 0

    def check(self, max_bad_fraction: float, skipped: int | None = None) -> None:
        """A DataError summarising the skips when ``(dropped_rows + skipped) / rows`` passes
        ``max_bad_fraction``; ``skipped`` defaults to this epoch's recorded skips (pass a total summed
        over processes to check all of them)."""
        skipped = len(self.skipped) if skipped is None else skipped
        bad = self.dropped_rows + skipped
        if self.rows <= 0 or bad / self.rows <= max_bad_fraction:
            return
        summary = (
            f"{bad} of {self.rows} samples of the {self.split} split skipped ({bad / self.rows:.1%}), more "
            f"than data.max_bad_fraction={max_bad_fraction:g}: {self.dropped_rows} row(s) dropped at start, "
            f"{skipped} failed to decode this epoch (data.on_bad_sample=skip); the first problems:"
        )
        first = [*self.dropped, *(p for note in self.skipped for p in note.problems())][:5]
        raise DataError([DataProblem(self.where, "-", "rows", summary), *first])


def check_fraction(max_bad_fraction: float) -> float:
    if not 0.0 <= float(max_bad_fraction) <= 1.0:
        raise ValueError(f"data.max_bad_fraction={max_bad_fraction!r}; expected a fraction in [0, 1]")
    return float(max_bad_fraction)
