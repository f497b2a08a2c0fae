"""Bad input: problems that name the file, the row and the field, and the bad-sample policy."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

log = logging.getLogger(__name__)

OnBadSample = Literal["raise", "skip"]
Item = TypeVar("Item")


@dataclass(frozen=True)
class DataProblem:
    """One problem with one row: printed as ``PATH:ROW: field: problem``."""

    path: str
    row: int | str
    field: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}:{self.row}: {self.field}: {self.problem}"


class DataError(ValueError):
    """Bad input; carries every problem found so that all are reported at once."""

    def __init__(self, problems: list[DataProblem]):
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{len(problems)} problem(s) in the data:\n{shown}{more}")

    @classmethod
    def one(cls, path: str | Path, row: int | str, field: str, problem: str) -> DataError:
        return cls([DataProblem(str(path), row, field, problem)])


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
