"""evaluate.py's path (vlmlab.run.evaluate) for every experiment: each task's metrics reach metrics.json and
TensorBoard, and predictions.jsonl holds one line per scored sample.

The checkpoint is honest but cheap: the experiment itself (preset=tiny) fits one optimizer step on one
batch and saves it; evaluation then scores one test batch of two samples with 8 new tokens. An
untrained model's answers are mostly unparsable, which is exactly the path the metrics must survive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import compose_config
from vlmlab.run import build, evaluate

EVAL_BATCH = 2
GROUNDING = ["r1_at_0.3", "r1_at_0.5", "r1_at_0.7", "miou", "unparsable"]
BRATS = [
    "iou_3d",
    "hit_at_0.3",
    "hit_at_0.5",
    "hit_at_0.7",
    "peak_slice_mae",
    "tumor_ratio_rel_error",
    "format_valid",
]
MCQA = ["accuracy", "unparsable"]  # and accuracy/<dataset_name> for the names in the scored batch
# experiment -> (metrics group, keys every run must log)
EXPECTED = {
    "ct_report_sft": ("report", ["bleu_1", "bleu_4", "rouge_l"]),
    "vtg_sft": ("grounding", GROUNDING),
    "vtg_grpo": ("grounding", GROUNDING),
    "brats_sft": ("brats", BRATS),
    "brats_grpo": ("brats", BRATS),
    "mcqa_sft": ("mcqa", MCQA),
    "mcqa_grpo": ("mcqa", MCQA),
    "aloha_reward": ("classify", ["accuracy", "f1_macro"]),
}
BATCHES = ["data.batch_size=1", f"data.eval_batch_size={EVAL_BATCH}"]


def short(experiment: str) -> list[str]:
    """Small batches, and 8 new tokens for the experiments that generate (the classifier does not)."""
    generation = [] if experiment == "aloha_reward" else ["task.module.generation.max_new_tokens=8"]
    return [*generation, *BATCHES]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic data folder for all experiments: sft and grpo of a source share what is written."""
    return tmp_path_factory.mktemp("data")


def one_step_checkpoint(experiment: str, data_dir: Path, tmp: Path) -> Path:
    """Fit the tiny experiment for one optimizer step on one batch and save the checkpoint."""
    overrides = [
        f"experiment={experiment}",
        "preset=tiny",
        f"paths.data_dir={data_dir}",
        *short(experiment),
        "trainer.max_steps=1",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=0",
        "callbacks.hf_export=null",
        "callbacks.model_checkpoint=null",
    ]
    if experiment.endswith("_grpo"):
        overrides.append("task.module.grpo.num_generations=2")
    run = build(compose_config("train", overrides, tmp / "train"))
    run.trainer.fit(run.module, datamodule=run.datamodule)
    path = tmp / "one_step.ckpt"
    run.trainer.save_checkpoint(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("experiment", list(EXPECTED))
def test_evaluate_scores_every_task(experiment: str, data_dir: Path, tmp_path: Path) -> None:
    checkpoint = one_step_checkpoint(experiment, data_dir, tmp_path)
    overrides = [
        f"experiment={experiment}",
        "preset=tiny",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={checkpoint}",
        "trainer.limit_test_batches=1",
        *short(experiment),
    ]
    cfg = compose_config("evaluate", overrides, tmp_path / "evaluate")
    returned = evaluate(cfg)
    run_dir = Path(cfg.paths.output_dir)

    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == EVAL_BATCH and all("id" in p for p in predictions)

    group, names = EXPECTED[experiment]
    expected = {f"test/{group}/{name}" for name in names}
    if group == "mcqa":  # one accuracy per dataset_name among the scored samples
        expected |= {f"test/mcqa/accuracy/{p['target']['dataset_name']}" for p in predictions}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert expected <= set(metrics), sorted(expected - set(metrics))
    assert {k for k in metrics if k.startswith(f"test/{group}/")} == expected  # no stray dataset names
    assert set(returned) == set(metrics)
    fractions = {k: v for k, v in metrics.items() if k in expected and not k.endswith(("_mae", "_rel_error"))}
    assert all(0.0 <= v <= 1.0 for v in fractions.values()), fractions
    # A mean over no samples (e.g. peak-slice error with no valid answer) is NaN, written as null.
    assert all(v is None or v >= 0 for k, v in metrics.items() if k in expected)

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert expected <= set(events.Tags()["scalars"]), sorted(expected - set(events.Tags()["scalars"]))
