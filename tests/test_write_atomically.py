"""Synthetic datasets are written to a temporary sibling and renamed into place, so that jobs of a
sweep that start together never read a half-written folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmlab.data.synthetic.folder import write_atomically


def write_rows(folder: Path) -> None:
    (folder / "train.json").write_text("[]")


def test_the_folder_appears_whole_and_no_scratch_is_left(tmp_path: Path) -> None:
    root = tmp_path / "synthetic" / "ct_report"
    write_atomically(root, write_rows)
    assert (root / "train.json").read_text() == "[]"
    assert sorted(p.name for p in root.parent.iterdir()) == ["ct_report"]


def test_an_empty_folder_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "ct_report"
    root.mkdir()
    write_atomically(root, write_rows)
    assert (root / "train.json").exists()


def test_another_jobs_copy_written_meanwhile_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "ct_report"

    def slow_writer(folder: Path) -> None:
        write_rows(folder)
        root.mkdir()  # the other job finished first
        (root / "train.json").write_text("[1]")

    write_atomically(root, slow_writer)
    assert (root / "train.json").read_text() == "[1]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct_report"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ct_report"

    def broken(folder: Path) -> None:
        write_rows(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(root, broken)
    assert list(tmp_path.iterdir()) == []
