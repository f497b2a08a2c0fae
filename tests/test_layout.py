"""The layering rules of the source tree (docs/design.md, "Who imports whom"), checked on the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vlmlab"
FILES = sorted(SRC.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every ``vlmlab...`` module a file imports (at any depth of its code)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "vlmlab" or n.startswith("vlmlab.")}


def package_of(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0].removesuffix(".py") if len(relative.parts) > 1 else relative.stem


# package -> the vlmlab packages it must not import
FORBIDDEN = {
    "tasks": {"data", "models", "modules", "rl", "rewards", "metrics", "callbacks", "tools", "run"},
    "rewards": {"data", "models", "modules", "rl", "metrics", "callbacks", "tools", "run"},
    "metrics": {"data", "models", "modules", "rl", "rewards", "callbacks", "tools", "run"},
    "callbacks": {"data", "modules", "rl", "tools", "run"},
    "models": {"data", "modules", "rl", "rewards", "metrics", "callbacks", "tools", "run"},
    "data": {"modules", "rl", "rewards", "metrics", "callbacks", "tools", "run"},
    "rl": {"data", "modules", "rewards", "metrics", "callbacks", "tools", "run"},
}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layers(path: Path) -> None:
    package = package_of(path)
    forbidden = FORBIDDEN.get(package, set())
    bad = {m for m in imported_modules(path) if m.split(".")[1] in forbidden} if forbidden else set()
    assert not bad, f"{path.relative_to(SRC)} ({package}) imports {sorted(bad)}"


def test_model_tokens_and_patch_sizes_live_in_models() -> None:
    pattern = re.compile(r"im_end|im_start|vision_start|patch_size\s*=\s*1[46]\b")
    found = [
        f"{p.relative_to(SRC)}:{i}"
        for p in FILES
        if p.relative_to(SRC).parts[0] != "models"
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not found, found


def test_no_file_is_over_500_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in FILES if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_comments_point_only_inside_the_repository() -> None:
    pattern = re.compile(r"seed 00\d|seed-00\d|DESIGN\.md")
    roots = [SRC, SRC.parents[1] / "conf"]
    found = [
        f"{p}:{i}"
        for root in roots
        for p in sorted(root.rglob("*.py")) + sorted(root.rglob("*.yaml"))
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not found, found[:20]
