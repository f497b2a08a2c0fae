"""train.py and evaluate.py as a user runs them: the demo learns, evaluation writes its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import run_script


def run(script: str, overrides: list[str], tmp: Path, name: str, timeout: int = 600) -> Path:
    """Run an entry point with data under ``tmp`` and its run folder at ``tmp/runs/name``; return the folder."""
    run_dir = tmp / "runs" / name
    args = [
        script,
        *overrides,
        f"paths.log_dir={tmp}/logs",
        f"paths.data_dir={tmp}/data",
        f"hydra.run.dir={run_dir}",
    ]
    run_script(args, timeout=timeout)
    assert (run_dir / ".hydra" / "config.yaml").exists()
    return run_dir


def scalars(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`make demo`: train.py experiment=ct_report_sft preset=tiny (synthetic data written on first use)."""
    tmp = tmp_path_factory.mktemp("demo")
    return run("train.py", ["experiment=ct_report_sft", "preset=tiny"], tmp, "demo"), tmp


@pytest.mark.slow
def test_demo_halves_the_loss_and_logs_validation_metrics(demo_run: tuple[Path, Path]) -> None:
    run_dir, tmp = demo_run
    assert (tmp / "data" / "synthetic" / "ct_report" / "train.json").exists()
    events = scalars(run_dir)
    loss = [e.value for e in events.Scalars("train/loss")]
    assert len(loss) > 20 and loss[-1] <= loss[0] / 2, (loss[0], loss[-1])
    tags = set(events.Tags()["scalars"])
    assert {"val/loss", "val/report/rouge_l", "val/report/bleu_1", "val/report/bleu_4"} <= tags
    assert any(tag.startswith("lr-AdamW") for tag in tags)
    # validate_before_training: a validation pass at step 0, then the fit's own; the constant baseline once.
    rouge = events.Scalars("val/report/rouge_l")
    assert rouge[0].step == 0 and len(rouge) >= 2 and rouge[-1].step > 0
    (constant,) = events.Scalars("val/report/rouge_l_constant")
    # The demo reads its volumes: the reports beat the best input-independent report (issue 10).
    assert rouge[-1].value > constant.value + 0.10, (rouge[-1].value, constant.value)
    assert "val/completions" in {t.rsplit("/text_summary", 1)[0] for t in events.Tags()["tensors"]}
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "last.ckpt").exists()
    assert (checkpoints / "hf" / "config.json").exists() and (
        checkpoints / "hf" / "processor_config.json"
    ).exists()


@pytest.mark.slow
def test_evaluate_writes_predictions_metrics_and_tensorboard(demo_run: tuple[Path, Path]) -> None:
    train_dir, tmp = demo_run
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    run_dir = run(
        "evaluate.py", ["experiment=ct_report_sft", "preset=tiny", f"ckpt_path={ckpt}"], tmp, "evaluate"
    )
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    test_rows = json.loads((tmp / "data" / "synthetic" / "ct_report" / "test.json").read_text())
    assert [p["id"] for p in predictions] == [r["id"] for r in test_rows]
    assert all({"prediction", "answer", "target"} <= set(p) for p in predictions)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"test/loss", "test/report/rouge_l", "test/report/bleu_4"} <= set(metrics)
    assert metrics["test/report/rouge_l"] > 0.3  # the demo model writes report-like text
    assert "test/report/rouge_l" in scalars(run_dir).Tags()["scalars"]


@pytest.mark.slow
def test_qwen3_tiny_trains_through_the_same_command(tmp_path: Path) -> None:
    run_dir = run(
        "train.py",
        [
            "experiment=ct_report_sft",
            "preset=tiny",
            "model=qwen3_vl_tiny",
            "trainer.max_epochs=1",
            "trainer.check_val_every_n_epoch=1",
            "trainer.val_check_interval=1.0",  # the tiny preset validates every N steps
        ],
        tmp_path,
        "qwen3",
    )
    assert "val/report/rouge_l" in scalars(run_dir).Tags()["scalars"]


def test_evaluate_refuses_a_missing_checkpoint(tmp_path: Path) -> None:
    args = [
        "evaluate.py",
        "experiment=ct_report_sft",
        "preset=tiny",
        f"ckpt_path={tmp_path}/missing.ckpt",
        f"paths.log_dir={tmp_path}/logs",
    ]
    result = run_script(args, timeout=300, expect=None, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "is not a checkpoint" in result.stderr
