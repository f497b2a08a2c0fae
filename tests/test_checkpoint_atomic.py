"""Crash-safe checkpoints (issue 11): a writer killed mid-write leaves the previous ``last.ckpt``
loadable, whatever filesystem ``$TMPDIR`` is on, and ``ckpt_path=last`` skips an unreadable file.

The kill is the kernel's own: the writer process lowers its file-size limit (``RLIMIT_FSIZE``) to half
the checkpoint when it opens a file in the log folder, with ``SIGXFSZ`` at its default action, so it
dies at that byte as under ``kill -9`` (no Python cleanup runs), deterministically."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies import DeepSpeedStrategy

from tests.helpers import ROOT, compose_config
from vlmlab.checkpoints import AtomicCheckpointIO, newest_readable_checkpoint, resolve_last
from vlmlab.run import train, trainer_plugins

PREVIOUS = {"step": 1, "weights": torch.arange(10.0)}


def scratch_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_a_save_is_loadable_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(PREVIOUS, path)
    AtomicCheckpointIO().save_checkpoint({**PREVIOUS, "step": 2}, path)  # over an existing file
    assert AtomicCheckpointIO().load_checkpoint(path)["step"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


class Unpicklable:
    def __reduce__(self) -> Any:
        raise RuntimeError("fails halfway")


def test_a_save_that_raises_halfway_keeps_the_previous_file_and_no_scratch(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(PREVIOUS, path)
    with pytest.raises(RuntimeError, match="fails halfway"):
        AtomicCheckpointIO().save_checkpoint({"big": torch.zeros(1000), "bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["weights"], PREVIOUS["weights"])
    assert scratch_files(tmp_path) == []


# The writer: saves PREVIOUS, then a 32 MB checkpoint onto the same last.ckpt with the given
# CheckpointIO, killed by SIGXFSZ halfway through whatever it writes inside the log folder.
WRITER = r"""
import os, resource, signal, sys
import torch
import vlmlab  # noqa: F401  (torchvision on a CPU torch)
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from vlmlab.checkpoints import AtomicCheckpointIO

kind, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
io = AtomicCheckpointIO() if kind == "atomic" else TorchCheckpointIO()
io.save_checkpoint({"step": 1, "weights": torch.arange(10.0)}, path)
folder = os.path.dirname(path)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it (writes would just fail): die instead
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

def kill_halfway(event, args):
    name = args[0] if event == "open" and isinstance(args[0], (str, os.PathLike)) else None
    if name is not None and os.path.dirname(os.path.abspath(name)) == folder:
        writing = (args[1] and "w" in args[1]) or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR)
        if writing:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

sys.addaudithook(kill_halfway)
io.save_checkpoint({"step": 2, "weights": torch.ones(8 * 1024 * 1024)}, path)
print("not killed")
"""
LIMIT = 16 * 1024 * 1024  # half the second checkpoint


def kill_a_writer(kind: str, log_dir: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", WRITER, kind, str(log_dir / "last.ckpt"), str(LIMIT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )


def loads(path: Path) -> bool:
    try:
        torch.load(path)
    except RuntimeError:  # "PytorchStreamReader failed reading zip archive: failed finding central directory"
        return False
    return True


@pytest.fixture(params=["same filesystem", "tmpfs"])
def tmpdir_elsewhere(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A ``$TMPDIR`` outside the log folder: a sibling folder, or one on /dev/shm (another filesystem
    than tmp_path, as a scratch or network log folder is for a local /tmp)."""
    if request.param == "same filesystem":
        return tmp_path / "tmp"
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm (a tmpfs on Linux) to put $TMPDIR on another filesystem")
    if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test's folder")
    folder = shm / f"vlmlab-test-{os.getpid()}-{tmp_path.name}"
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", str(folder)], check=False))
    return folder


def test_a_writer_killed_mid_write_leaves_the_previous_last_ckpt_whole(
    tmp_path: Path, tmpdir_elsewhere: Path
) -> None:
    log_dir = tmp_path / "logs" / "checkpoints"
    result = kill_a_writer("atomic", log_dir, tmpdir_elsewhere)
    assert result.returncode == -signal.SIGXFSZ, result.stdout + result.stderr[-3000:]
    (scratch,) = scratch_files(log_dir)  # the killed writer's half file...
    assert (log_dir / scratch).stat().st_size == LIMIT
    assert loads(log_dir / "last.ckpt")  # ...and the previous checkpoint, whole
    assert torch.equal(torch.load(log_dir / "last.ckpt")["weights"], PREVIOUS["weights"])
    # The next save clears a dead writer's scratch file (it can be GBs).
    AtomicCheckpointIO().save_checkpoint({"step": 3}, log_dir / "last.ckpt")
    assert scratch_files(log_dir) == []
    assert torch.load(log_dir / "last.ckpt")["step"] == 3


def test_lightnings_own_writer_killed_across_filesystems_breaks_last_ckpt(
    tmp_path: Path, tmpdir_elsewhere: Path
) -> None:
    """What the test above guards against: Lightning 2.6.6's TorchCheckpointIO writes in $TMPDIR and
    moves the file; across filesystems the move is a copy onto last.ckpt, and a kill truncates it."""
    log_dir = tmp_path / "logs" / "checkpoints"
    result = kill_a_writer("lightning", log_dir, tmpdir_elsewhere)
    if os.stat(tmpdir_elsewhere).st_dev == os.stat(log_dir).st_dev:
        assert result.returncode == 0  # a rename: nothing in the log folder is written halfway
        assert torch.load(log_dir / "last.ckpt")["step"] == 2
        return
    assert result.returncode == -signal.SIGXFSZ, result.stdout + result.stderr[-3000:]
    assert (log_dir / "last.ckpt").stat().st_size == LIMIT
    assert not loads(log_dir / "last.ckpt")


# ---------------------------------------------------------------- ckpt_path=last


def write_checkpoint(path: Path, step: int, mtime: int) -> None:
    torch.save({"step": step}, path)
    os.utime(path, (mtime, mtime))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_last_is_the_newest_readable_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_checkpoint(tmp_path / "step_000004.ckpt", 4, 1_000)
    write_checkpoint(tmp_path / "last.ckpt", 6, 2_000)
    assert newest_readable_checkpoint(tmp_path) == tmp_path / "last.ckpt"
    write_checkpoint(tmp_path / "last-v1.ckpt", 8, 3_000)
    truncate(tmp_path / "last-v1.ckpt")
    os.utime(tmp_path / "last-v1.ckpt", (3_000, 3_000))
    with caplog.at_level(logging.WARNING, logger="vlmlab.checkpoints"):
        assert newest_readable_checkpoint(tmp_path) == tmp_path / "last.ckpt"
    assert "last-v1.ckpt" in caplog.text and "unreadable" in caplog.text
    truncate(tmp_path / "last.ckpt")
    assert resolve_last(tmp_path) == tmp_path / "step_000004.ckpt"  # the next newest readable one
    (tmp_path / "step_000010.ckpt").mkdir()  # a DeepSpeed folder: its engine checks it
    assert resolve_last(tmp_path) == tmp_path / "step_000010.ckpt"


def test_last_without_checkpoints_is_none_and_with_only_broken_ones_an_error(tmp_path: Path) -> None:
    assert resolve_last(tmp_path / "missing") is None
    assert resolve_last(tmp_path) is None
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 cut here")
    with pytest.raises(ValueError, match=r"no checkpoint in .* is readable"):
        resolve_last(tmp_path)
    with zipfile.ZipFile(tmp_path / "last.ckpt", "w") as archive:
        archive.writestr("notes.txt", "a zip, not a torch.save file")
    with pytest.raises(ValueError, match="readable"):
        resolve_last(tmp_path)


# ---------------------------------------------------------------- the Trainer and DeepSpeed


def test_deepspeed_writes_its_folders_itself_so_the_plugin_is_harmless(tmp_path: Path) -> None:
    """DeepSpeedStrategy takes the plugin but saves through its engine, never through CheckpointIO."""
    plugin = AtomicCheckpointIO()
    trainer = pl.Trainer(
        accelerator="cpu", strategy=DeepSpeedStrategy(), plugins=[plugin], logger=False, devices=1
    )
    assert trainer.strategy.checkpoint_io is plugin
    saved: list[str] = []

    class Engine(torch.nn.Module):
        def save_checkpoint(self, path: str, **kwargs: Any) -> None:
            saved.append(path)

    trainer.strategy.model = Engine()
    target = tmp_path / "last.ckpt"
    trainer.strategy.save_checkpoint({"state_dict": {}, "epoch": 0}, target)
    assert saved == [target] and not target.exists()


@pytest.mark.parametrize("launcher", [None, "slurm"])
def test_the_trainer_gets_the_plugin_beside_a_launchers_plugins(launcher: str | None, tmp_path: Path) -> None:
    overrides = ["experiment=mcqa_sft"] + ([f"hydra/launcher={launcher}"] if launcher else [])
    launchers = [SLURMEnvironment] if launcher else []

    def kinds(*extra: str) -> list[type]:
        return [type(p) for p in trainer_plugins(compose_config("train", [*overrides, *extra], tmp_path))]

    assert kinds() == [*launchers, AtomicCheckpointIO]
    assert kinds("checkpoint_io=null") == launchers  # Lightning's own TorchCheckpointIO


class RecordCheckpointIO(pl.Callback):
    """Writes the strategy's CheckpointIO class name to ``path`` (train() returns no trainer)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.write_text(type(trainer.strategy.checkpoint_io).__name__)


def tiny_run(tmp_path: Path, *extra: str) -> Path:
    overrides = [
        "experiment=mcqa_sft",
        "preset=tiny",
        "data.synth_rows=8",
        "data.batch_size=2",
        "trainer.max_steps=2",  # mid-epoch: 4 batches an epoch
        "trainer.limit_val_batches=0",
        "trainer.accumulate_grad_batches=1",
        "validate_before_training=false",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.save_top_k=0",
        "+callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.hf_export=null",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "+callbacks.record._target_=tests.test_checkpoint_atomic.RecordCheckpointIO",
        f"+callbacks.record.path={tmp_path}/checkpoint_io.txt",
        f"paths.data_dir={tmp_path}/data",
        *extra,
    ]
    train(compose_config("train", overrides, tmp_path))
    return tmp_path / "run" / "checkpoints"


@pytest.mark.slow
def test_a_tiny_run_writes_through_the_plugin_and_resumes_past_a_broken_newest_file(tmp_path: Path) -> None:
    checkpoints = tiny_run(tmp_path)
    assert (tmp_path / "checkpoint_io.txt").read_text() == "AtomicCheckpointIO"
    last = checkpoints / "last.ckpt"
    assert last.is_file() and not last.is_symlink()  # save_last: true writes it, not a link or copy
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert sorted(p.name for p in checkpoints.iterdir() if p.suffix == ".ckpt") == ["last.ckpt"]
    assert scratch_files(checkpoints) == []
    # A newer, truncated checkpoint (as a killed copy left one): resume takes last.ckpt and goes on.
    (checkpoints / "last-v1.ckpt").write_bytes(last.read_bytes()[:1000])
    tiny_run(tmp_path, "ckpt_path=last", "trainer.max_steps=4")
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 4
