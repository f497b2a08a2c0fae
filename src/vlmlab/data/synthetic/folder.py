"""The folder a synthetic dataset is written to: written whole, and stamped with its recipe.

A datamodule with ``synthesize`` on says what it would write as a :class:`SyntheticRecipe` (a writer
of :mod:`vlmlab.data.synthetic` and its arguments); :func:`use_synthetic` writes it into an empty
``data.root`` (:func:`write_atomically`), with the stamp ``synthetic.json`` at the folder's top::

    {"writer": "vlmlab.data.synthetic.mcqa.write", "arguments": {"num_train": 3072, ...}}

and checks the stamp of a folder that holds data already: a folder written with other arguments
(an older preset's 24 cases where this run asks for 512) stops the run at start with a
:class:`~vlmlab.exits.ConfigError`, instead of training on data of another size. A folder without a
stamp (a user's own data, or one written before stamps) is used as it is, with a warning.

The stamp holds every argument of the writer, its defaults included, compared after a JSON round
trip (a tuple default equals the list a config gives).
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmlab.exits import ConfigError

log = logging.getLogger(__name__)

__all__ = ["STAMP", "SyntheticRecipe", "read_stamp", "use_synthetic", "write_atomically"]

STAMP = "synthetic.json"  # at the top of a synthetic folder: the recipe it was written with


@dataclass(frozen=True)
class SyntheticRecipe:
    """A synthetic dataset: ``writer(folder, **arguments)``.

    keys: the config key of an argument, for messages (default ``data.synth_options.<argument>``).
    """

    writer: Callable[..., Any]
    arguments: Mapping[str, Any]
    keys: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.writer.__module__}.{self.writer.__qualname__}"

    def key(self, argument: str) -> str:
        return self.keys.get(argument, f"data.synth_options.{argument}")

    def stamp(self) -> dict[str, Any]:
        """What ``synthetic.json`` holds: the writer and all its arguments, defaults included, as JSON."""
        signature = inspect.signature(self.writer)
        takes = list(signature.parameters)[1:]  # after the folder
        unknown = [a for a in self.arguments if a not in takes]
        if unknown:
            raise ConfigError(
                f"{self.key(unknown[0])}: {self.name} has no argument {unknown[0]!r} (it has {', '.join(takes)})"
            )
        bound = signature.bind(None, **self.arguments)
        bound.apply_defaults()
        arguments = dict(list(bound.arguments.items())[1:])  # not the folder
        return {"writer": self.name, "arguments": json.loads(json.dumps(arguments, default=str))}

    def write(self, folder: Path) -> Any:
        """Write the dataset into ``folder`` and its stamp; returns what the writer returns."""
        stamp = self.stamp()  # first: an unknown argument stops before anything is written
        written = self.writer(folder, **self.arguments)
        (Path(folder) / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
        return written


def read_stamp(root: Path) -> dict[str, Any] | None:
    """The stamp of the synthetic folder ``root``, or None when it has none."""
    path = Path(root) / STAMP
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        stamp = error
    if not isinstance(stamp, dict) or not isinstance(stamp.get("arguments"), dict):
        raise ConfigError(
            f"{path} is not a synthetic recipe ({stamp}): delete {root} to have it written again"
        )
    return stamp


def _differences(stamped: dict[str, Any], asked: dict[str, Any], recipe: SyntheticRecipe) -> list[str]:
    """``key: STAMPED in the folder, ASKED asked`` for the writer and each argument that differ."""

    def show(arguments: dict[str, Any], name: str) -> str:
        return repr(arguments[name]) if name in arguments else "(none)"

    found = []
    if stamped.get("writer") != asked["writer"]:
        found.append(f"writer: {stamped.get('writer')} in the folder, {asked['writer']} asked")
    old, new = stamped["arguments"], asked["arguments"]
    for name in [*new, *(n for n in old if n not in new)]:
        if name not in old or name not in new or old[name] != new[name]:
            found.append(f"{recipe.key(name)}: {show(old, name)} in the folder, {show(new, name)} asked")
    return found


def use_synthetic(root: Path, recipe: SyntheticRecipe, has_data: bool) -> None:
    """Write ``recipe`` into ``root`` unless it ``has_data``; then check that the folder's stamp is
    this recipe (a ConfigError naming the arguments that differ), or warn that it has none."""
    root = Path(root)
    if not has_data:
        log.info("writing a synthetic dataset to %s", root)
        # Another job of a sweep may win the rename with other arguments: the check below sees it.
        write_atomically(root, recipe.write)
    stamped = read_stamp(root)
    if stamped is None:
        log.warning(
            "data.root=%s holds data but no %s: it is used as it is, and the recipe it was written "
            "with cannot be checked against this run's",
            root,
            STAMP,
        )
        return
    differences = _differences(stamped, recipe.stamp(), recipe)
    if differences:
        raise ConfigError(
            f"data.root={root} holds a synthetic dataset written with other arguments than this run "
            f"asks for ({root / STAMP}): {'; '.join(differences)}. Delete {root} to have it written "
            "again with this run's arguments, or point data.root elsewhere (or set the arguments back)"
        )


def write_atomically(root: Path, write: Callable[[Path], None]) -> None:
    """Write a folder with ``write(folder)`` so that no reader ever sees it half written.

    Jobs of a sweep may start at once and each write the same synthetic dataset on first use: each
    writes into its own temporary sibling (the stamp too) and renames it into place; the first rename
    wins and the others discard their copy (the writers are deterministic, so the copies are equal).
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(scratch)
        if root.exists() and not any(root.iterdir()):
            root.rmdir()  # an empty folder (e.g. made by hand) holds no data: take its place
        try:
            scratch.rename(root)
        except OSError:
            if not root.exists():
                raise
            log.info("%s exists already (written by another job meanwhile?): keeping it", root)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
