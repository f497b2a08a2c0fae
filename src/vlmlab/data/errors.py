"""Errors for bad input that name the file, the row and the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
