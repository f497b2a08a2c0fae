"""Sweeps (Hydra multirun): train returns the optimized metric; a failing job is logged and the rest run."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from submitit.core.utils import pickle_load
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import vlmlab.run
from tests.helpers import CONF, compose_config, run_script


class _Trainer:
    """Stands in for pl.Trainer: fit leaves these metrics behind."""

    def __init__(self) -> None:
        self.callback_metrics: dict[str, torch.Tensor] = {}

    def fit(self, module: object, datamodule: object, ckpt_path: str | None) -> None:
        self.callback_metrics = {"train/loss": torch.tensor(2.0), "val/loss": torch.tensor(0.25)}


def stub_build(cfg: object) -> SimpleNamespace:
    return SimpleNamespace(module=None, datamodule=None, trainer=_Trainer())


def test_train_returns_the_optimized_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vlmlab.run, "build", stub_build)
    cfg = OmegaConf.create({"optimized_metric": "val/loss", "train": True, "test": False, "ckpt_path": None})
    assert vlmlab.run.train(cfg) == 0.25


def test_train_warns_when_the_optimized_metric_was_not_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(vlmlab.run, "build", stub_build)
    cfg = OmegaConf.create({"optimized_metric": "val/reward/total", "train": True, "ckpt_path": None})
    with caplog.at_level(logging.WARNING, logger="vlmlab.run"):
        assert vlmlab.run.train(cfg) is None
    assert "optimized_metric val/reward/total was not logged" in caplog.text


def test_a_failing_run_logs_its_folder_overrides_and_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_build(cfg: object) -> None:
        raise ValueError("Invalid learning rate: -1.0")

    cfg = compose_config("train", ["experiment=ct_report_sft", "preset=tiny", "optim.lr=-1"], tmp_path)
    monkeypatch.setattr(vlmlab.run, "build", broken_build)
    with (
        caplog.at_level(logging.ERROR, logger="vlmlab.run"),
        pytest.raises(ValueError, match="learning rate"),
    ):
        vlmlab.run.train(cfg)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"run failed: {tmp_path / 'run'} (overrides: experiment=ct_report_sft preset=tiny optim.lr=-1)"
    )
    assert record.exc_info is not None and record.exc_info[0] is ValueError  # the traceback


def test_submitit_launcher_runs_every_job_and_raises_the_failure_at_the_end(tmp_path: Path) -> None:
    """hydra/launcher=local (and slurm, the same code): the failed job's exception travels back in its
    result pickle; the other jobs complete; Hydra's sweeper raises it once all have returned."""

    def task(cfg: DictConfig) -> float:  # nested, so cloudpickle sends it by value to the job process
        if cfg.optim.lr < 0:
            raise ValueError(f"Invalid learning rate: {cfg.optim.lr}")
        return float(cfg.optim.lr)

    overrides = ["hydra/launcher=local", "optim.lr=-1,3e-3", f"paths.log_dir={tmp_path}/logs"]
    GlobalHydra.instance().clear()
    with (
        initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
        pytest.raises(ValueError, match="-1"),
    ):
        GlobalHydra.instance().hydra.multirun("train", task, overrides, with_log_configuration=False)
    GlobalHydra.instance().clear()
    jobs = [pickle_load(p)[1] for p in sorted(tmp_path.glob("logs/train/multiruns/*/.submitit/*_result.pkl"))]
    returns = {job.hydra_cfg.hydra.job.num: job for job in jobs}
    assert set(returns) == {0, 1}
    assert returns[0].status.name == "FAILED" and isinstance(returns[0]._return_value, ValueError)
    assert returns[1].status.name == "COMPLETED" and returns[1].return_value == 3e-3


@pytest.mark.slow
def test_a_failing_job_is_logged_and_the_next_job_still_runs(tmp_path: Path) -> None:
    """Basic launcher: job 0 raises inside train (lr -1 reaches AdamW), job 1 trains; the sweep exits 1."""
    args = [
        "train.py",
        "-m",
        "experiment=ct_report_sft",
        "preset=tiny",
        "optim.lr=-1,3e-3",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.val_check_interval=1.0",  # the tiny preset validates every N steps
        "task.module.generation.max_new_tokens=8",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    result = run_script(args, timeout=600, expect=1)
    assert (
        "Error executing job with overrides: ['experiment=ct_report_sft', 'preset=tiny', 'optim.lr=-1'"
        in (result.stderr)
    )
    (sweep,) = (tmp_path / "logs" / "ct_report_sft" / "multiruns").iterdir()
    failed = (sweep / "0" / "train.log").read_text()
    assert f"run failed: {sweep / '0'} (overrides: experiment=ct_report_sft preset=tiny optim.lr=-1" in failed
    assert "Traceback (most recent call last)" in failed and "Invalid learning rate: -1" in failed
    assert not (sweep / "0" / "checkpoints" / "last.ckpt").exists()

    good = sweep / "1"
    assert "final metrics" in (good / "train.log").read_text()
    assert (good / "checkpoints" / "last.ckpt").is_file() and (
        good / "checkpoints" / "hf" / "config.json"
    ).is_file()
    events = EventAccumulator(str(good / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/loss"} <= set(events.Tags()["scalars"])
