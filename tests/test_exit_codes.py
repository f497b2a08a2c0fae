"""Exit statuses a scheduler can trust (vlmlab.exits): 1 with one message for bad data, a config error
or a folder that cannot be written; 143 for a SIGTERM, with Lightning's SLURM requeue still working."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf
from pytorch_lightning.demos.boring_classes import BoringModel
from pytorch_lightning.utilities.exceptions import SIGTERMException

from tests.helpers import OFFLINE, ROOT, SLURM_ONE_TASK, run_script
from vlmlab import exits
from vlmlab.data.errors import DataError


def tiny(tmp: Path, *overrides: str, script: str = "train.py", run_dir: bool = True) -> list[str]:
    """A tiny CT-report run with its data and logs under ``tmp``, its run folder ``tmp/run``."""
    folders = [f"paths.data_dir={tmp}/data", f"paths.log_dir={tmp}/logs"]
    folders += [f"hydra.run.dir={tmp}/run"] if run_dir else []
    return [script, "experiment=ct_report_sft", "preset=tiny", *folders, *overrides]


def small_ct_data(tmp: Path, num_train: int = 4) -> Path:
    """A small synthetic CT-report set where preset=tiny looks for it (so it is not written again)."""
    from vlmlab.data.synthetic.ct_report import write

    root = tmp / "data" / "synthetic" / "ct_report"
    write(root, num_train=num_train, num_val=2, num_test=2, slices=16, size=48)
    return root


def assert_one_clean_message(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == exits.EXIT_FAILED, result.stderr[-4000:]
    assert "Traceback" not in output, output[-4000:]
    for text in expected:
        assert output.count(text) == 1, (text, result.stderr[-4000:])


# --- bad data, config errors, folders: exit 1 with one message -------------------------------------------


def test_a_bad_row_stops_with_its_path_row_field_and_no_traceback(tmp_path: Path) -> None:
    root = small_ct_data(tmp_path)
    rows = json.loads((root / "train.json").read_text())
    rows[1]["videos"] = ["volumes/missing.npy"]
    (root / "train.json").write_text(json.dumps(rows))
    result = run_script(
        tiny(tmp_path, "data.on_bad_sample=raise", "validate_before_training=false"), timeout=600, expect=None
    )
    line = f"{root / 'train.json'}:1: videos[0]: {root / 'volumes' / 'missing.npy'}: file not found"
    assert_one_clean_message(result, line)
    assert line in result.stderr  # errors go to stderr; the run's own log has it too
    assert line in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=???", "config error: Missing mandatory value: seed"),
        (
            "+model.bogus=1",
            "config error: model.bogus: BackboneSpec.__init__() got an unexpected keyword argument 'bogus'",
        ),
    ],
)
def test_a_config_error_stops_with_one_message(tmp_path: Path, override: str, message: str) -> None:
    result = run_script(tiny(tmp_path, override), timeout=300, expect=None)
    assert_one_clean_message(result, message)


def test_evaluate_reports_a_missing_checkpoint_and_a_config_error_in_one_message(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    result = run_script(
        tiny(tmp_path, f"ckpt_path={missing}", script="evaluate.py"), timeout=300, expect=None
    )
    assert_one_clean_message(result, f"config error: ckpt_path='{missing}' is not a checkpoint")
    (tmp_path / "some.ckpt").write_bytes(b"")
    result = run_script(
        tiny(tmp_path, f"ckpt_path={tmp_path / 'some.ckpt'}", "seed=???", script="evaluate.py"),
        timeout=300,
        expect=None,
    )
    assert_one_clean_message(result, "config error: Missing mandatory value: seed")


def test_a_run_folder_through_a_regular_file_stops_naming_it(tmp_path: Path) -> None:
    """paths.log_dir (and so hydra.run.dir) under a regular file: ENOTDIR, for root too."""
    (tmp_path / "a_file").write_text("not a folder\n")
    args = tiny(tmp_path, f"paths.log_dir={tmp_path}/a_file/logs", run_dir=False)
    result = run_script(args, timeout=300, expect=None)
    assert_one_clean_message(result, f"{tmp_path}/a_file: Not a directory (ENOTDIR)")
    assert f"cannot write the run folder {tmp_path}/a_file/logs/ct_report_sft/runs/" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_run_folder_stops_naming_it(tmp_path: Path) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)  # 0o500
    try:
        args = tiny(tmp_path, f"hydra.run.dir={read_only}/run")
        result = run_script(args, timeout=300, expect=None)
    finally:
        read_only.chmod(stat.S_IRWXU)
    assert_one_clean_message(result, f"cannot write the run folder {read_only}/run")


def test_a_log_folder_it_cannot_make_inside_the_run_stops_naming_it(tmp_path: Path) -> None:
    """The TensorBoard folder (TensorBoard wraps the OSError in a ValueError): one message naming it."""
    (tmp_path / "a_file").write_text("not a folder\n")
    small_ct_data(tmp_path)
    args = tiny(tmp_path, f"logger.tensorboard.save_dir={tmp_path}/a_file/tensorboard")
    result = run_script(args, timeout=600, expect=None)
    assert_one_clean_message(
        result, f"cannot write to {tmp_path}/a_file/tensorboard: Not a directory (ENOTDIR)"
    )


def test_clean_messages_and_bugs() -> None:
    cfg = OmegaConf.create({"paths": {"output_dir": "/runs/x"}, "trainer": {"_target_": "x.Y", "bogus": 1}})
    data = DataError.one("/d/train.json", 3, "videos[0]", "not a volume")
    assert exits.clean_message(data, cfg) == str(data)
    # A write() that fills the disk names no file: the run folder is named instead.
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert exits.clean_message(full, cfg) == (
        "cannot write to the run folder /runs/x (or where the config puts checkpoints and logs): "
        "No space left on device (ENOSPC)"
    )
    read_only = PermissionError(errno.EROFS, os.strerror(errno.EROFS), "/runs/x/checkpoints/last.ckpt")
    wrapped = ValueError("could not log")
    wrapped.__cause__ = read_only
    assert exits.clean_message(wrapped, cfg) == (
        "cannot write to /runs/x/checkpoints/last.ckpt: Read-only file system (EROFS)"
    )
    # A Hydra partial called with an argument its target does not take: the key is named.
    with pytest.raises(TypeError) as partial:
        instantiate(
            {"_target_": "pytorch_lightning.callbacks.LearningRateMonitor", "bogus": 1}, _partial_=True
        )()
    assert exits.clean_message(partial.value, cfg) == f"config error: trainer.bogus: {partial.value}"
    # Bugs keep their traceback: a keyword no config node passes, any other exception.
    assert exits.clean_message(TypeError("f() got an unexpected keyword argument 'zzz'"), cfg) is None
    assert exits.clean_message(ValueError("Invalid learning rate: -1.0"), cfg) is None
    assert exits.clean_message(FileNotFoundError(errno.ENOENT, "No such file", "/x"), cfg) is None


# --- SIGTERM: 143, after Lightning's own handling; SLURM's requeue on USR1 unchanged -------------------------


class _SignalAt(pl.Callback):
    """Send this process ``signum`` at training batch ``at`` (or at the last validation batch)."""

    def __init__(self, signum: int, at: int | None = None, validation: bool = False) -> None:
        self.signum, self.at, self.validation = signum, at, validation
        self.batches_after = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)
        elif self.at is not None and trainer.global_step > self.at:
            self.batches_after += 1

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        module: object,
        outputs: object,
        batch: object,
        batch_idx: int,
        *args: object,
    ) -> None:
        if self.validation and batch_idx + 1 == trainer.num_val_batches[0]:
            os.kill(os.getpid(), self.signum)


def boring_trainer(tmp_path: Path, *callbacks: pl.Callback, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=20,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def sigterm_handler_restored() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("sigterm_handler_restored")
def test_a_sigterm_in_fit_exits_143_after_lightning_stops(tmp_path: Path) -> None:
    stopper = _SignalAt(signal.SIGTERM, at=3)
    trainer = boring_trainer(tmp_path, stopper)
    with pytest.raises(SystemExit) as stopped, exits.sigterm_exits(trainer):
        trainer.fit(BoringModel())
    assert stopped.value.code == exits.EXIT_SIGTERM == 143
    assert trainer.received_sigterm and trainer.state.status == "interrupted"
    assert trainer.global_step == 3 and stopper.batches_after == 0  # Lightning stopped at the next batch


@pytest.mark.usefixtures("sigterm_handler_restored")
def test_a_sigterm_in_the_last_validation_batch_is_not_forgotten_by_the_next_call(tmp_path: Path) -> None:
    """Lightning finishes a validation whose last batch got the SIGTERM, and its next call (fit) would
    reset received_sigterm and train to the end: the exit comes before that call."""
    trainer = boring_trainer(tmp_path, _SignalAt(signal.SIGTERM, validation=True))
    with pytest.raises(SystemExit) as stopped, exits.sigterm_exits(trainer):
        trainer.validate(BoringModel())
    assert stopped.value.code == exits.EXIT_SIGTERM
    with exits.sigterm_exits(pl.Trainer(logger=False)):  # a trainer without a SIGTERM: nothing happens
        pass
    with pytest.raises(SystemExit) as raised, exits.sigterm_exits(trainer):
        raise SIGTERMException  # Lightning's, whose code is None: exit status 0
    assert raised.value.code == exits.EXIT_SIGTERM


@pytest.fixture
def slurm_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A one-task SLURM job's environment, with an `scontrol` on PATH that records its arguments."""
    for name, value in SLURM_ONE_TASK.items():
        monkeypatch.setenv(name, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path / "scontrol.log"


@pytest.mark.usefixtures("sigterm_handler_restored")
def test_slurm_requeue_on_usr1_then_the_sigterm_of_the_requeue_exits_143(
    tmp_path: Path, slurm_job: Path
) -> None:
    """As conf/hydra/launcher/slurm.yaml: USR1 still saves hpc_ckpt_1.ckpt and requeues (training goes
    on), and the SIGTERM SLURM then sends stops the run with 143 instead of 0."""
    requeue = _SignalAt(signal.SIGUSR1, at=2)
    trainer = boring_trainer(
        tmp_path, requeue, _SignalAt(signal.SIGTERM, at=5), plugins=[SLURMEnvironment(auto_requeue=True)]
    )
    with pytest.raises(SystemExit) as stopped, exits.sigterm_exits(trainer):
        trainer.fit(BoringModel())
    assert stopped.value.code == exits.EXIT_SIGTERM
    assert (tmp_path / "hpc_ckpt_1.ckpt").is_file()
    assert slurm_job.read_text().split() == ["requeue", "4242"]
    assert trainer.global_step == 5 and requeue.batches_after == 3  # USR1 did not stop training


# A training step done: the progress bar's count (stdout) or the batch statistics' line in the run's log.
_STEP = re.compile(r"Epoch \d+: .*?\| *[1-9]\d*/\d+|\] - Step [1-9]\d*:")


@pytest.mark.slow
def test_train_py_stopped_by_sigterm_during_training_exits_143(tmp_path: Path) -> None:
    small_ct_data(tmp_path, num_train=32)  # an epoch of 32 steps: the SIGTERM comes inside it
    args = tiny(
        tmp_path,
        "validate_before_training=false",
        "trainer.max_epochs=1000",
        "trainer.limit_val_batches=0",
        "data.batch_size=1",
    )
    stdout, stderr, log = tmp_path / "stdout", tmp_path / "stderr", tmp_path / "run" / "train.log"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=out, stderr=err, env={**os.environ, **OFFLINE}
        )
        try:
            deadline = time.monotonic() + 300
            while not any(_STEP.search(f.read_text(errors="replace")) for f in (stdout, log) if f.exists()):
                assert process.poll() is None, stderr.read_text()[-4000:]
                assert time.monotonic() < deadline, "no training step in 300 s"
                time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = stdout.read_text(errors="replace") + stderr.read_text(errors="replace")
    assert code == exits.EXIT_SIGTERM, output[-4000:]
    assert "Received SIGTERM" in output and "Traceback" not in output, output[-4000:]


def test_the_run_folder_check_names_the_folder_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a read-only folder gives a user who is not root (root writes into one anyway)."""

    def read_only(dir: Path) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), f"{dir}/tmpa1b2c3")

    monkeypatch.setattr(exits.tempfile, "TemporaryFile", read_only)
    problem = exits._writable_folder_problem(tmp_path / "logs" / "run")
    assert problem is not None and (problem.errno, problem.filename) == (errno.EACCES, str(tmp_path))
