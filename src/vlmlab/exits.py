"""Exit statuses a scheduler can trust, and one message, without a traceback, for errors that are not bugs.

train.py and evaluate.py exit with:

* ``0``: the run finished.
* ``1``: it failed. Bad data (:class:`~vlmlab.data.errors.DataError`), a config error (a missing
  mandatory value, an unknown key or ``_target_`` argument, a value vlmlab refuses: :class:`ConfigError`)
  or a folder it cannot write (permission, read-only or full file system) prints one message naming
  what and where: ``PATH:ROW: field: problem`` for data, the config key, the folder. Any other exception
  is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of an error the run raised
  in every case.
* ``143`` (128 + 15, SIGTERM): a SIGTERM stopped it, after Lightning did what it does on SIGTERM
  (:func:`sigterm_exits`). A SIGTERM outside Lightning's loops (while the model loads, say) takes the
  signal's default action: the process dies of signal 15, which shells and SLURM report as 143 too.
"""

from __future__ import annotations

import errno
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.utilities.exceptions import SIGTERMException

from vlmlab.data.errors import DataError

__all__ = [
    "EXIT_FAILED",
    "EXIT_SIGTERM",
    "CleanError",
    "ConfigError",
    "MissingPath",
    "RunFolderCheck",
    "clean_message",
    "sigterm_exits",
]

EXIT_FAILED = 1
EXIT_SIGTERM = 128 + 15  # the shell's status of a process ended by SIGTERM

# What an unwritable or full folder raises (ENOTDIR, EEXIST: a path that runs through a regular file).
FOLDER_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
    | {errno.ENOTDIR, errno.EEXIST, errno.EISDIR}
)


class CleanError(CompactHydraException):
    """An error whose message is the whole report. Raised from the task function, it reaches Hydra's
    ``run_and_report``, which prints a ``CompactHydraException``'s message alone (after "Error executing
    job with overrides: [...]") and exits 1; in a sweep the other jobs still run first. The error it
    replaces stays its ``__context__``, so ``HYDRA_FULL_ERROR=1`` prints that one's traceback too."""


class ConfigError(ValueError):
    """A config value vlmlab refuses; the message names the key and what to do instead."""


class MissingPath(ConfigError, FileNotFoundError):
    """A config value names a file or folder that does not exist (``ckpt_path=...``)."""


def _raised_by_hydra(error: BaseException) -> bool:
    """Whether Hydra itself raised ``error`` (a ``_target_`` not found, say), not the target's own code."""
    tb = error.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith(("hydra.", "omegaconf."))


# CPython's message when a call passes a keyword its callable does not take.
_UNEXPECTED_KEYWORD = re.compile(r"got an unexpected keyword argument '(\w+)'")


def _target_argument_keys(cfg: DictConfig, name: str) -> list[str]:
    """The full keys ``a.b.name`` of the config nodes with a ``_target_`` that pass ``name``."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            if "_target_" in node and name in node:
                found.append(f"{prefix}{name}")
            for key, child in node.items():
                walk(child, f"{prefix}{key}.")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, f"{prefix}{index}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def _argument_error(error: BaseException, cfg: DictConfig | None) -> str | None:
    """A config error when ``error`` says a ``_target_`` does not take an argument its config node gives.

    The keyword must be one the config passes: the same TypeError from a call in vlmlab's own code
    (a bug) names a keyword no config node holds, and keeps its traceback.
    """
    if not isinstance(error, TypeError) or cfg is None:
        return None
    match = _UNEXPECTED_KEYWORD.search(str(error))
    keys = _target_argument_keys(cfg, match.group(1)) if match else []
    return f"config error: {', '.join(keys)}: {error}" if keys else None


def _os_problem(error: OSError) -> str:
    """``PATH: problem (ECODE)``: the path Python's OSError names, when it names one."""
    code = errno.errorcode.get(error.errno or 0, str(error.errno))
    problem = f"{error.strerror or error} ({code})"
    if error.filename is None:
        return problem
    path = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
    return f"{path}: {problem}"


def _folder_message(error: OSError, output_dir: str | None) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"cannot access {_os_problem(error)}"  # reading as well as writing
    if error.filename is None:
        # A failed write() names no file: all a run writes is under its folder unless the config moves it.
        where = f"the run folder {output_dir}" if output_dir else "the run folder"
        return (
            f"cannot write to {where} (or where the config puts checkpoints and logs): {_os_problem(error)}"
        )
    return f"cannot write to {_os_problem(error)}"


def clean_message(error: BaseException, cfg: DictConfig | None = None, _depth: int = 0) -> str | None:
    """The one message to print for ``error`` in the run configured by ``cfg``, or None when it is a
    bug (its traceback is needed).

    Explicit causes (``raise ... from``) are followed: Hydra wraps what a ``_target_`` raised, logging
    and TensorBoard wrap the OSError of a folder they cannot create.
    """
    if isinstance(error, CleanError | DataError):
        return str(error)
    if isinstance(error, ConfigError | OmegaConfBaseException):
        return f"config error: {error}"
    if isinstance(error, OSError) and error.errno in FOLDER_ERRNOS:
        output_dir = (
            OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False) if cfg else None
        )
        return _folder_message(error, output_dir)
    argument = _argument_error(error, cfg)  # a Hydra partial (``_partial_: true``) called with it
    if argument is not None:
        return argument
    cause = error.__cause__
    if cause is None or _depth > 10:
        return f"config error: {error}" if isinstance(error, HydraException) else None
    # What a _target_'s own code raised is clean only if it is one of the above; Hydra's own (a target
    # not found, arguments that do not bind) is a config error in any case.
    fallback = (
        f"config error: {error}" if isinstance(error, HydraException) and _raised_by_hydra(cause) else None
    )
    return clean_message(cause, cfg, _depth + 1) or fallback


@contextmanager
def sigterm_exits(trainer: pl.Trainer) -> Iterator[None]:
    """Around one trainer call (fit, validate, test, predict): exit with :data:`EXIT_SIGTERM` when a
    SIGTERM stopped it, after Lightning has handled it (``on_exception`` callbacks, loggers finalized,
    teardown; with SLURM auto-requeue its SignalConnector has already saved and requeued on SIGUSR1).

    Why this is needed: Lightning stops its loops on SIGTERM by raising ``SIGTERMException``, a
    ``SystemExit`` without a code, so the process exits 0 and a stopped job looks successful. A SIGTERM
    in the last batch, or after the loops, only sets ``trainer.received_sigterm``, which the next trainer
    call resets: it is checked after each call, before another can start.
    """
    try:
        yield
    except SIGTERMException:
        raise SystemExit(EXIT_SIGTERM) from None
    if getattr(trainer, "received_sigterm", False):  # a Trainer property; stand-ins in tests lack it
        raise SystemExit(EXIT_SIGTERM)


def _writable_folder_problem(folder: Path) -> OSError | None:
    """Why ``folder`` cannot be made and written, found without making it (a sweep's folder name is
    resolved again per job, so a folder made here could be left empty beside the real one)."""
    existing = folder.absolute()
    try:
        while not existing.exists():  # False, not an error, through a regular file (ENOTDIR)
            existing = existing.parent
        if not existing.is_dir():
            return NotADirectoryError(errno.ENOTDIR, "Not a directory", str(existing))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:  # a folder above it that cannot be searched (EACCES), or written
        # Named by the folder, not by the random name of the probe file.
        return OSError(error.errno, error.strerror, str(existing))
    return None


class RunFolderCheck(Callback):
    """A Hydra callback (``hydra.callbacks``): refuse to start, with one message naming the folder,
    when the run's (or sweep's) folder cannot be made and written.

    Why: Hydra makes that folder and opens its log file before the task function runs, so vlmlab's own
    handling cannot see an OSError there, and Hydra prints it with a traceback. Hydra turns an Exception
    raised by a callback into a warning, so this one exits itself.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        # ${hydra:...} in the folder's name resolves through HydraConfig, which Hydra sets only when the
        # job starts: set it as run_job does, and put back what was there.
        hydra_config = HydraConfig.instance()
        previous = hydra_config.cfg
        hydra_config.set_config(config)
        try:
            folder = Path(str(config.hydra[mode].dir))
        finally:
            hydra_config.cfg = previous
        problem = _writable_folder_problem(folder)
        if problem is not None:
            print(
                f"cannot write the {mode} folder {folder} (hydra.{mode}.dir, under paths.log_dir): "
                + _os_problem(problem),
                file=sys.stderr,
            )
            raise SystemExit(EXIT_FAILED)
