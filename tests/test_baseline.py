"""The constant baseline: each task's best input-independent answer by hand, its scores by hand, and the
callback logging ``val/<group>/<key>_constant`` once a run (TensorBoard, two DDP ranks, a tiny SFT fit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from tests.helpers import ROOT, run_script
from vlmlab.callbacks.baseline import ConstantBaseline
from vlmlab.metrics.brats import BratsDetectionMetrics
from vlmlab.metrics.classification import ClassificationMetrics
from vlmlab.metrics.mcqa import MCQAMetrics
from vlmlab.metrics.report import ReportMetrics
from vlmlab.metrics.temporal import TemporalGroundingMetrics
from vlmlab.tasks import brats_detection, grounding, mcqa, report, robot_reward


def scores_of(metric: Any, targets: list[dict[str, Any]]) -> dict[str, float]:
    metric.update_constant(metric.constant_answer(targets), targets)
    return metric.compute()


# ---------------------------------------------------------------------------- MCQA


def letter(label: str, name: str = "vqa_rad") -> dict[str, Any]:
    return {"answer_label": label, "options": {"A": "a", "B": "b"}, "dataset_name": name, "dataset_index": 0}


def test_mcqa_constant_is_the_most_frequent_letter() -> None:
    targets = [letter("A"), letter("b"), letter("B")]
    assert mcqa.constant_answer(targets) == "<answer>B</answer>"
    assert mcqa.constant_answer([letter("B"), letter("A")]) == "<answer>A</answer>"  # a tie: the earlier
    assert scores_of(MCQAMetrics(), targets) == pytest.approx(
        {"accuracy": 2 / 3, "accuracy/vqa_rad": 2 / 3, "unparsable": 0.0}
    )
    with pytest.raises(ValueError, match="one-letter"):
        mcqa.constant_answer([letter("AB")])
    with pytest.raises(ValueError, match="one-letter"):
        mcqa.constant_answer([])


# ---------------------------------------------------------------------------- BraTS


def case(box: list[float], peak: int, ratio: float) -> dict[str, Any]:
    return {"bbox_3d": box, "peak_slice": peak, "tumor_ratio": ratio}


def test_brats_constant_is_the_mean_box_median_peak_and_mean_ratio() -> None:
    targets = [case([0, 0, 0, 4, 4, 4], 1, 0.1), case([2, 2, 2, 6, 6, 6], 3, 0.3)]
    answer = brats_detection.constant_answer(targets)
    assert answer == brats_detection.format_answer([1, 1, 1, 5, 5, 5], 1, 0.2)
    assert brats_detection.parse_answer(answer) == {
        "bbox_3d": [1, 1, 1, 5, 5, 5],
        "peak_slice": 1,
        "tumor_ratio": 0.2,
    }
    # [1, 5]^3 meets [0, 4]^3 (and [2, 6]^3) in [1, 4]^3: 27 of 64 + 64 - 27.
    scores = scores_of(BratsDetectionMetrics(), targets)
    assert scores == pytest.approx(
        {
            "iou_3d": 27 / 101,
            "hit_at_0.3": 0.0,
            "hit_at_0.5": 0.0,
            "hit_at_0.7": 0.0,
            "peak_slice_mae": (0 + 2) / 2,
            "tumor_ratio_rel_error": (0.1 / 0.1 + 0.1 / 0.3) / 2,
            "format_valid": 1.0,
        }
    )


def test_brats_constant_box_rounds_each_edge_and_keeps_one_pixel() -> None:
    # mean x1 = 2.2 -> 2, mean x2 = 2.4 -> 2, widened to 3; y, z: 0.5 -> 1 and 1.5 -> 2 (half up).
    targets = [case([2.0, 0, 0, 2.3, 1, 1], 4, 0.5), case([2.4, 1, 1, 2.5, 2, 2], 6, 0.5)]
    answer = brats_detection.parse_answer(brats_detection.constant_answer(targets))
    assert answer["bbox_3d"] == [2, 1, 1, 3, 2, 2]
    assert answer["peak_slice"] == 4  # the lower of the two middle values
    with pytest.raises(ValueError, match="bbox_3d"):
        brats_detection.constant_answer([case([0, 0, 0, 0, 1, 1], 0, 0.5)])


# ---------------------------------------------------------------------------- grounding


def clip(start: float, end: float, duration: float, **fmt: Any) -> dict[str, Any]:
    temporal = grounding.TemporalFormat(**fmt)
    return grounding.GroundingTarget.of(start, end, duration, temporal).as_dict()


def test_grounding_constant_is_the_mean_relative_span() -> None:
    # (2, 4) of 10 s and (10, 16) of 20 s are (0.2, 0.4) and (0.5, 0.8) of their clips: mean (0.35, 0.6).
    targets = [clip(2, 4, 10), clip(10, 16, 20)]
    assert grounding.constant_answer(targets) == "<answer>0.35 to 0.60</answer>"
    tokens = [clip(2, 4, 10, use_temporal_tokens=True), clip(10, 16, 20, use_temporal_tokens=True)]
    assert grounding.constant_answer(tokens) == "<answer><35> to <60></answer>"
    # (3.5, 6) vs (2, 4): 0.5 / 4; (7, 12) vs (10, 16): 2 / 9.
    scores = scores_of(TemporalGroundingMetrics(), targets)
    assert scores == pytest.approx(
        {"r1_at_0.3": 0.0, "r1_at_0.5": 0.0, "r1_at_0.7": 0.0, "miou": (0.125 + 2 / 9) / 2, "unparsable": 0.0}
    )


def test_grounding_constant_in_seconds_and_refusals() -> None:
    seconds = [clip(2, 4, 10, use_relative_timestamps=False), clip(4, 8, 20, use_relative_timestamps=False)]
    assert grounding.constant_answer(seconds) == "<answer>3.0 to 6.0</answer>"
    with pytest.raises(ValueError, match="mix answer formats"):
        grounding.constant_answer([seconds[0], clip(2, 4, 10)])
    with pytest.raises(ValueError, match="at least one"):
        grounding.constant_answer([])


# ---------------------------------------------------------------------------- report


def test_report_constant_is_the_medoid_not_the_most_frequent() -> None:
    texts = ["p q", "p q", "a b c d p", "a b c d q", "a b c d"]
    targets = [{"report": t} for t in texts]
    # Mean ROUGE-L F over the five: "p q" (1 + 1 + 2/7 + 2/7 + 0) / 5 = 0.514; "a b c d"
    # (0 + 0 + 8/9 + 8/9 + 1) / 5 = 0.556; "a b c d p" (2/7 + 2/7 + 1 + 4/5 + 8/9) / 5 = 0.652, tied with
    # "a b c d q", seen later.
    medoid = (2 / 7 + 2 / 7 + 1 + 4 / 5 + 8 / 9) / 5
    assert report.constant_answer(targets) == "a b c d p"
    assert report.constant_answer(targets, max_candidates=1) == "p q"
    assert scores_of(ReportMetrics(), targets)["rouge_l"] == pytest.approx(medoid, abs=1e-6)


# ---------------------------------------------------------------------------- classification


def test_classifier_constant_is_the_majority_class() -> None:
    targets = [{"label": 0}, {"label": 1}, {"label": 1}]
    assert robot_reward.constant_label(targets) == 1
    assert robot_reward.constant_label([{"label": 2}, {"label": 0}]) == 0  # a tie: the lower
    # Predicting 1 everywhere: class 1 F1 = 2*2 / (2*2 + 1 + 0) = 4/5, class 0 F1 = 0.
    assert scores_of(ClassificationMetrics(2), targets) == pytest.approx({"accuracy": 2 / 3, "f1_macro": 0.4})
    with pytest.raises(ValueError, match="integer labels"):
        robot_reward.constant_label([{"label": True}])


# ---------------------------------------------------------------------------- the callback


class Batch:
    """A stand-in for VisionLanguageBatch: only ``targets`` (the collate function of the val loader)."""

    def __init__(self, targets: list[dict[str, Any]]):
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)


class AlwaysA(pl.LightningModule):
    """Answers ``<answer>A</answer>`` (MCQA, ``metrics``) or class 0 (classifier, ``val_metrics``) to
    everything and logs its validation metric as the modules do."""

    def __init__(self, classifier: bool = False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.classifier = classifier
        if classifier:
            self.val_metrics = ClassificationMetrics(2)
        else:
            self.metrics = MCQAMetrics()

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight - batch.float().mean()).pow(2).sum()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.classifier:
            self.val_metrics.update(
                torch.zeros(len(batch)), torch.tensor([t["label"] for t in batch.targets])
            )
        else:
            self.metrics.update(["<answer>A</answer>"] * len(batch), batch.targets)

    def on_validation_epoch_end(self) -> None:
        metric = self.val_metrics if self.classifier else self.metrics
        self.log_dict({f"val/{metric.group}/{k}": v for k, v in metric.compute().items()}, sync_dist=True)
        metric.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loaders(targets: list[dict[str, Any]]) -> tuple[DataLoader, DataLoader]:
    return DataLoader(torch.arange(4.0), batch_size=2), DataLoader(targets, batch_size=2, collate_fn=Batch)


def fit_trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[ConstantBaseline()],
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
        log_every_n_steps=1,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def scalar_events(log_dir: str) -> dict[str, list[float]]:
    events = EventAccumulator(log_dir)
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_callback_logs_the_constant_once_a_run_to_tensorboard(tmp_path: Path) -> None:
    # The sanity check sees only the first batch (A, A): were it counted, the constant would be A.
    targets = [letter("A"), letter("A"), letter("B"), letter("B"), letter("B")]
    trainer = fit_trainer(tmp_path)
    trainer.fit(AlwaysA(), *loaders(targets))
    assert trainer.callback_metrics["val/mcqa/accuracy"] == pytest.approx(2 / 5)
    assert trainer.callback_metrics["val/mcqa/accuracy_constant"] == pytest.approx(3 / 5)
    scalars = scalar_events(trainer.logger.log_dir)
    assert len(scalars["val/mcqa/accuracy"]) == 2  # two validation epochs
    assert scalars["val/mcqa/accuracy_constant"] == pytest.approx([3 / 5])  # logged once
    assert scalars["val/mcqa/accuracy/vqa_rad_constant"] == pytest.approx([3 / 5])
    assert scalars["val/mcqa/unparsable_constant"] == [0.0]


def test_callback_is_not_logged_again_after_a_resume(tmp_path: Path) -> None:
    targets = [letter("A"), letter("B"), letter("B"), letter("B")]
    first = fit_trainer(
        tmp_path / "a", max_epochs=1, enable_checkpointing=True, default_root_dir=tmp_path / "a"
    )
    first.fit(AlwaysA(), *loaders(targets))
    (ckpt,) = (tmp_path / "a").rglob("*.ckpt")
    resumed = fit_trainer(tmp_path / "b", max_epochs=2)
    resumed.fit(AlwaysA(), *loaders(targets), ckpt_path=str(ckpt))
    scalars = scalar_events(resumed.logger.log_dir)
    assert len(scalars["val/mcqa/accuracy"]) == 1  # the resumed epoch validates
    assert "val/mcqa/accuracy_constant" not in scalars  # the checkpoint says the baseline was logged


def test_callback_scores_the_classifier_with_its_majority_class(tmp_path: Path) -> None:
    targets = [{"label": 1}, {"label": 0}, {"label": 1}]
    trainer = fit_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, logger=False)
    trainer.validate(AlwaysA(classifier=True), loaders(targets)[1])
    metrics = trainer.callback_metrics
    assert metrics["val/classify/accuracy"] == pytest.approx(1 / 3)
    assert metrics["val/classify/accuracy_constant"] == pytest.approx(2 / 3)
    assert metrics["val/classify/f1_macro_constant"] == pytest.approx(0.4)


DDP_SCRIPT = """
import json, sys
import vlmlab  # first: torchvision on a CPU-only torch, in every rank Lightning starts
from torch.utils.data import DataLoader
from tests.test_baseline import AlwaysA, Batch, fit_trainer, letter, loaders
from pathlib import Path

targets = [letter(x) for x in ("A", "A", "B", "A", "B", "C")]
trainer = fit_trainer(
    Path(sys.argv[1]), max_epochs=1, devices=2, strategy="ddp", num_sanity_val_steps=0, logger=False
)
trainer.fit(AlwaysA(), loaders(targets)[0], DataLoader(targets, batch_size=1, collate_fn=Batch))
if trainer.is_global_zero:
    print(json.dumps({k: float(v) for k, v in trainer.callback_metrics.items()}))
"""


@pytest.mark.slow
def test_callback_chooses_one_answer_for_all_ranks(tmp_path: Path) -> None:
    # DistributedSampler deals items 0, 2, 4 to rank 0 (A, B, B: B alone) and 1, 3, 5 to rank 1 (A, A, C).
    # Over all six A is the most frequent: rank 0 scores 1/3, rank 1 2/3, the split 3/6. Each rank's own
    # constant would score 2/3 + 2/3.
    script = tmp_path / "ddp_baseline.py"
    script.write_text(DDP_SCRIPT)
    result = run_script([str(script), str(tmp_path)], timeout=300, env={"PYTHONPATH": str(ROOT)})
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["val/mcqa/accuracy_constant"] == pytest.approx(0.5)
    assert metrics["val/mcqa/accuracy"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------- a tiny SFT fit


@pytest.mark.slow
def test_tiny_sft_fit_logs_the_report_constant(tmp_path: Path) -> None:
    from tests.test_sft import make_data, make_module
    from tests.test_sft import trainer as sft_trainer
    from vlmlab.data.synthetic.ct_report import write as write_ct_report

    root = tmp_path / "ct_report"
    write_ct_report(root, num_train=4, num_val=3, num_test=1, slices=16, size=48)
    module = make_module("qwen2_5_vl")
    data = make_data(root, module)
    # One training batch, then the whole validation split (the constant needs all its targets).
    trainer = sft_trainer(
        tmp_path,
        max_steps=-1,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=None,
        callbacks=[ConstantBaseline()],
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    for key in ("bleu_1", "bleu_4", "rouge_l"):
        assert f"val/report/{key}" in metrics and f"val/report/{key}_constant" in metrics
    val = data.datasets["val"]
    targets = [val[i].target for i in range(len(val))]
    expected = scores_of(ReportMetrics(), targets)
    assert float(metrics["val/report/rouge_l_constant"]) == pytest.approx(expected["rouge_l"], abs=1e-6)
