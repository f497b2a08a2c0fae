"""Checkpoint files that a kill cannot leave half written, and ``ckpt_path=last`` that skips broken ones.

Why: Lightning's ``TorchCheckpointIO`` writes a temporary file in ``$TMPDIR`` and moves it onto the
checkpoint. When the log folder is on another filesystem (a scratch or network file system), that
move is a copy straight onto ``last.ckpt``; a job killed during the copy left ``last.ckpt``
truncated (``torch.load``: "failed finding central directory") and the run could not resume.

:class:`AtomicCheckpointIO` writes ``.<name>.tmp-<pid>`` in the checkpoint's own folder, fsyncs it,
renames it onto the name (atomic within one filesystem) and fsyncs the folder: a reader sees the old
file or the new one, never a part. It covers every file checkpoint Lightning writes: top-k, ``last.ckpt``
(``save_last: true`` saves it, it is not a copy), the SLURM ``hpc_ckpt_N.ckpt``. Not covered:

* DeepSpeed's checkpoints, which are folders its engine writes itself (Lightning's ``DeepSpeedStrategy``
  does not call ``CheckpointIO.save_checkpoint``; it only removes old folders and loads files through
  it, which this class leaves to ``TorchCheckpointIO``), so the plugin is harmless there.
* ``save_last: link``: Lightning removes ``last.ckpt`` and then makes it a symlink to a file written
  here, so a kill between the two leaves no ``last.ckpt``, not a broken one (the resolution below then
  takes the newest other checkpoint).
* Remote (fsspec URL) paths: written by ``TorchCheckpointIO`` as before.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from lightning_fabric.utilities.types import _PATH

log = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointIO", "newest_readable_checkpoint", "readable_problem", "resolve_last"]


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove_stale_scratch(path: Path) -> None:
    """Remove the temporary files of ``path`` left by writers that were killed (they can be GBs)."""
    for scratch in path.parent.glob(f".{path.name}.tmp-*"):
        pid = scratch.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_running(int(pid)):
            scratch.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse fsync on a folder, where the rename is
    # still atomic, only perhaps not yet on disk after a power cut.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic on a local path (see the module's docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # its error, or a remote path
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_scratch(path)
        scratch = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(scratch, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(scratch, path)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)


def readable_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable checkpoint, or None. A file must be a whole torch zip archive
    (its central directory, at the end, is the first thing a truncation loses); a folder is a DeepSpeed
    checkpoint, which only its engine can check, so it is taken as readable."""
    if path.is_dir():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist()):
                return "a zip archive without data.pkl: not a torch.save file"
    except (OSError, zipfile.BadZipFile) as error:
        return str(error) or type(error).__name__
    return None


def newest_readable_checkpoint(folder: Path) -> Path | None:
    """The newest (by modification time) ``*.ckpt`` in ``folder`` that :func:`readable_problem` passes;
    each newer one that does not is logged and skipped. None when there is none."""
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for candidate in candidates:
        problem = readable_problem(candidate)
        if problem is None:
            return candidate
        log.warning("ckpt_path=last: skipping unreadable checkpoint %s (%s)", candidate, problem)
    return None


def resolve_last(folder: Path) -> Path | None:
    """What ``ckpt_path=last`` resumes from: :func:`newest_readable_checkpoint`, or None when the folder
    has no checkpoint at all. Raises when it has some but none is readable (starting again from
    scratch would silently throw the run away)."""
    found = newest_readable_checkpoint(folder) if folder.is_dir() else None
    if found is None and folder.is_dir() and any(folder.glob("*.ckpt")):
        raise ValueError(
            f"ckpt_path=last: no checkpoint in {folder} is readable (see the warnings above); pass "
            "ckpt_path=<a checkpoint> to resume from another, or ckpt_path=null to start again"
        )
    return found
