"""MCQA metrics: accuracy overall and per dataset by hand, and their sync across two DDP processes."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlmlab.metrics.brats import BratsDetectionMetrics
from vlmlab.metrics.mcqa import MCQAMetrics, decode_names, encode_names
from vlmlab.metrics.temporal import TemporalGroundingMetrics


def target(label: str, name: str) -> dict:
    return {"answer_label": label, "options": {"A": "a", "B": "b"}, "dataset_name": name, "dataset_index": 0}


PREDICTIONS = [
    "<answer>A</answer>",  # right
    "<think>It is round.</think><answer>(c)</answer>",  # wrong
    "<answer>c.</answer>",  # right (case and full stop allowed, as the reward)
    "The answer is D",  # unparsable: wrong
    "<answer>A</answer> no, <answer>E</answer>",  # the last answer counts: right
]
TARGETS = [
    target("A", "vqa_rad"),
    target("B", "vqa_rad"),
    target("C", "slake"),
    target("D", "slake"),
    target("e", "path vqa"),
]
EXPECTED = {
    "accuracy": 3 / 5,
    "accuracy/path vqa": 1.0,
    "accuracy/slake": 0.5,
    "accuracy/vqa_rad": 0.5,
    "unparsable": 1 / 5,
}


def test_names_round_trip_through_bytes() -> None:
    names = ["vqa_rad", "MedXpertQA-Ω", "a b"]
    codes = encode_names(names)
    assert codes.dtype == torch.uint8 and int((codes == 0).sum()) == 3
    assert decode_names(codes) == names and decode_names(codes.float()) == names  # a gather may upcast
    assert decode_names(encode_names([])) == []
    with pytest.raises(ValueError, match="dataset_name"):
        encode_names(["bad\x00name"])


def test_accuracy_overall_and_per_dataset_by_hand() -> None:
    metric = MCQAMetrics()
    metric.update(PREDICTIONS[:2], TARGETS[:2])
    metric.update(PREDICTIONS[2:], TARGETS[2:])
    assert metric.compute() == pytest.approx(EXPECTED)
    assert list(metric.compute()) == [
        "accuracy",
        "accuracy/path vqa",
        "accuracy/slake",
        "accuracy/vqa_rad",
        "unparsable",
    ]
    assert MCQAMetrics.group == "mcqa"


def test_reset_forgets_datasets() -> None:
    metric = MCQAMetrics()
    metric.update(PREDICTIONS, TARGETS)
    metric.reset()
    empty = metric.compute()
    assert set(empty) == {"accuracy", "unparsable"} and all(math.isnan(v) for v in empty.values())
    metric.update(["<answer>B</answer>"], [target("B", "slake")])
    assert metric.compute() == {"accuracy": 1.0, "accuracy/slake": 1.0, "unparsable": 0.0}


def test_bad_targets_raise_clearly() -> None:
    metric = MCQAMetrics()
    with pytest.raises(ValueError, match="answer_label"):
        metric.update(["<answer>A</answer>"], [target("AB", "x")])
    with pytest.raises(ValueError, match="dataset_name"):
        metric.update(["<answer>A</answer>"], [{"answer_label": "A"}])
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        metric.update(["<answer>A</answer>"], TARGETS[:2])


# ------------------------------------------------------------------------------------------ DDP

SECONDS = {"duration": 10.0, "relative": False, "num_bins": 100, "temporal_tokens": False}
BRATS = {"bbox_3d": [10, 10, 2, 20, 20, 6], "peak_slice": 4, "tumor_ratio": 0.02}
BRATS_ANSWER = '<answer>{"bbox_3d": [10, 10, 2, 20, 20, 4], "peak_slice": 7, "tumor_ratio": 0.02}</answer>'


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mcqa, grounding, brats, idle = (
            MCQAMetrics(),
            TemporalGroundingMetrics(),
            BratsDetectionMetrics(),
            MCQAMetrics(),
        )
        if rank == 0:  # rank 0: 3 samples of two datasets; rank 1: 2 samples, one dataset only it sees
            mcqa.update(PREDICTIONS[:3], TARGETS[:3])
            grounding.update(["<answer>2.0 to 6.0</answer>"], [{**SECONDS, "timestamp": [2.0, 6.0]}])
            brats.update([BRATS_ANSWER], [BRATS])
            idle.update(PREDICTIONS[:1], TARGETS[:1])  # rank 1 never updates this one
        else:
            mcqa.update(PREDICTIONS[3:], TARGETS[3:])
            grounding.update(
                ["nothing", "<answer>2.0 to 4.0</answer>"], [{**SECONDS, "timestamp": [2.0, 6.0]}] * 2
            )
            brats.update(["nothing"], [BRATS])
        results = {"mcqa": mcqa.compute(), "grounding": grounding.compute(), "brats": brats.compute()}
        results["idle"] = idle.compute()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_metrics_are_exact_across_two_ddp_processes(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert results[0] == results[1]  # the same keys and values on every rank (log_dict's sync needs that)
    synced = results[0]
    assert synced["mcqa"] == pytest.approx(EXPECTED)
    assert synced["idle"] == {"accuracy": 1.0, "accuracy/vqa_rad": 1.0, "unparsable": 0.0}
    assert synced["grounding"] == pytest.approx(
        {"r1_at_0.3": 2 / 3, "r1_at_0.5": 2 / 3, "r1_at_0.7": 1 / 3, "miou": 1.5 / 3, "unparsable": 1 / 3}
    )
    assert synced["brats"] == pytest.approx(
        {
            "iou_3d": 0.25,
            "hit_at_0.3": 0.5,
            "hit_at_0.5": 0.5,
            "hit_at_0.7": 0.0,
            "peak_slice_mae": 3.0,
            "tumor_ratio_rel_error": 0.0,
            "format_valid": 0.5,
        }
    )
