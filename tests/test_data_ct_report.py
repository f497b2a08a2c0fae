"""Report-generation data: parsing into the sample contract, and bad input named by file, row and field."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from vlmlab.data.ct_report import CTReportDataModule, validate_file
from vlmlab.data.errors import DataError
from vlmlab.data.sample import Sample
from vlmlab.data.volume import VolumeFrames
from vlmlab.tools.validate import main as validate_main

FRAMES = VolumeFrames(num_frames=8, temporal_method="sample", size=(56, 56))


def row(i: int, content: str = "<video>\nWrite the report.", videos: list[str] | None = None) -> dict:
    return {
        "id": f"case_{i}",
        "messages": [{"role": "user", "content": content}, {"role": "assistant", "content": f"Report {i}."}],
        "videos": [f"v{i}.npy"] if videos is None else videos,
    }


def write_dataset(root: Path, rows: list, volumes: dict[str, np.ndarray] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, volume in (volumes or {}).items():
        np.save(root / name, volume)
    path = root / "train.json"
    path.write_text(json.dumps(rows))
    return path


def dataset(path: Path, frames: VolumeFrames = FRAMES, on_bad_sample: str = "raise", **kwargs):
    """The train split of a datamodule reading ``path`` (rows checked at start, decoded on access)."""
    module = CTReportDataModule(
        frames=frames,
        root=str(path.parent),
        train_file=path.name,
        val_file=None,
        test_file=None,
        on_bad_sample=on_bad_sample,
        **kwargs,
    )
    module.setup("fit")
    return module.datasets["train"]


def good_volume(t: int = 12) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (1, t, 32, 32)).astype(np.float32)


def test_rows_become_samples_with_decoded_frames(tmp_path: Path) -> None:
    path = write_dataset(tmp_path, [row(0), row(1)], {"v0.npy": good_volume(), "v1.npy": good_volume()[0]})
    sample = dataset(path)[1]
    assert isinstance(sample, Sample) and sample.id == "case_1"
    assert sample.answer == "Report 1." and sample.target == {"report": "Report 1."}
    (turn,) = sample.messages
    video, text = turn["content"]
    assert (
        video["type"] == "video"
        and video["video"].shape == (8, 56, 56, 3)
        and video["video"].dtype == np.uint8
    )
    assert text == {"type": "text", "text": "Write the report."}
    assert sample.metadata["row"] == 1 and sample.metadata["source"] == str(path)


def test_two_placeholders_keep_their_order(tmp_path: Path) -> None:
    r = row(0, content="Before <video> and after <video> end.", videos=["a.npy", "b.npy"])
    path = write_dataset(tmp_path, [r], {"a.npy": good_volume(10), "b.npy": good_volume(12)})
    content = dataset(path, VolumeFrames(num_frames=None, size=None))[0].messages[0]["content"]
    kinds = [item["type"] for item in content]
    assert kinds == ["text", "video", "text", "video", "text"]
    assert [len(item["video"]) for item in content if item["type"] == "video"] == [10, 12]


BAD_CASES = {
    "missing npy": ([row(0)], {}, "0: videos[0]: ", "file not found"),
    "wrong rank": ([row(0)], {"v0.npy": np.zeros((4, 4), np.float32)}, "0: videos[0]: ", "expected a volume"),
    "rank 4 with 2 channels": (
        [row(0)],
        {"v0.npy": np.zeros((2, 3, 4, 4), np.float32)},
        "0: videos[0]: ",
        "v0.npy",
    ),
    "user turn without <video>": (
        [row(0, content="Write the report.")],
        {"v0.npy": good_volume()},
        "0: messages: ",
        "0 <video> placeholder(s) in user turns but 1 video(s)",
    ),
    "placeholder without video": ([row(0, videos=[])], {}, "0: messages: ", "1 <video> placeholder(s)"),
    "no assistant turn": (
        [{"id": "x", "messages": [{"role": "user", "content": "<video>"}], "videos": ["v.npy"]}],
        {"v.npy": good_volume()},
        "0: messages: ",
        "no assistant turn",
    ),
    "missing id": (
        [{"messages": row(0)["messages"], "videos": ["v0.npy"]}],
        {"v0.npy": good_volume()},
        "0: id: ",
        "missing",
    ),
    "row not an object": (["oops"], {}, "0: row: ", "expected an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_row_and_field(case: str, tmp_path: Path) -> None:
    rows, volumes, where, what = BAD_CASES[case]
    path = write_dataset(tmp_path, rows, volumes)
    with pytest.raises(DataError) as error:
        dataset(path)
    message = str(error.value)
    assert f"{path}:{where}" in message and what in message
    assert validate_file(path) == error.value.problems


def test_empty_dataset_and_missing_or_broken_files(tmp_path: Path) -> None:
    module = CTReportDataModule(frames=FRAMES, root=str(write_dataset(tmp_path, []).parent), val_file=None)
    with pytest.raises(DataError, match=r"train.json:-: rows: the train split is empty"):
        module.setup("fit")
    with pytest.raises(DataError, match=r"nope.json:-: file: annotation file not found"):
        dataset(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(DataError, match=r"bad.json:line 1: json: "):
        dataset(tmp_path / "bad.json")
    (tmp_path / "latin.json").write_bytes('[{"id": "caf\xe9"}]'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.json:-: encoding: not UTF-8: byte 0xe9 at offset 12"):
        dataset(tmp_path / "latin.json")
    assert "encoding: not UTF-8" in str(validate_file(tmp_path / "latin.json")[0])


def test_skip_drops_bad_rows_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_dataset(
        tmp_path, [row(0), row(1), row(2)], {"v0.npy": good_volume(), "v2.npy": good_volume()}
    )
    with caplog.at_level(logging.WARNING):
        kept = dataset(path, on_bad_sample="skip")
    assert len(kept) == 2 and [kept[i].id for i in range(2)] == ["case_0", "case_2"]
    assert "skipped 1 of 3 rows" in caplog.text and f"{path}:1: videos[0]" in caplog.text


def test_validate_cli_prints_problems_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_dataset(
        tmp_path,
        [row(0), row(1)],
        {"v0.npy": good_volume(), "v1.npy": np.full((1, 4, 8, 8), np.nan, np.float32)},
    )
    assert len(dataset(path)) == 2  # headers are fine at start ...
    assert validate_main(["ct_report", str(path)]) == 1  # ... the full check decodes and finds the NaNs
    out = capsys.readouterr().out
    assert f"{path}:1: videos[0]: " in out and "non-finite" in out
    assert validate_main(["ct_report", str(path), "--no-decode"]) == 0


def test_datamodule_writes_synthetic_data_on_first_use(tmp_path: Path) -> None:
    module = CTReportDataModule(
        frames=FRAMES,
        root=str(tmp_path / "synthetic"),
        synthesize=True,
        synth_cases=4,
        synth_options={"num_val": 3, "num_test": 0},
    )
    module.prepare_data()
    module.setup("fit")
    assert len(module.datasets["train"]) == 4 and isinstance(module.datasets["val"][0], Sample)
    assert len(module.datasets["val"]) == 3  # synth_options reach the writer
    assert validate_file(tmp_path / "synthetic" / "train.json") == []


def test_duration_batching_packs_training_batches_by_vision_tokens(
    tmp_path: Path, tiny_processors, tiny_vision
) -> None:
    from vlmlab.data.collate import SFTCollator
    from vlmlab.data.sampler import DurationBucketSampler

    volumes = {f"v{i}.npy": good_volume(t) for i, t in enumerate([4, 8, 12, 16, 20, 24])}
    path = write_dataset(tmp_path, [row(i) for i in range(6)], volumes)
    frames = VolumeFrames(num_frames=None, size=(56, 56))
    module = CTReportDataModule(
        frames=frames,
        root=str(path.parent),
        val_file=None,
        test_file=None,
        collator=SFTCollator(tiny_processors["qwen2_5_vl"]),
        vision=tiny_vision["qwen2_5_vl"],
        duration_batching={"target_batch_duration": 80, "shuffle": False},
    )
    module.setup("fit")
    # Qwen2.5-VL: 56x56 frames are 2x2 merged patches = 4 tokens per temporal pair: T=4 -> 8 ... T=24 -> 48
    assert module.sample_costs("train") == [8.0, 16.0, 24.0, 32.0, 40.0, 48.0]
    loader = module.train_dataloader()
    assert isinstance(loader.batch_sampler, DurationBucketSampler)
    # greedy in ascending cost under 80 tokens: [8,16,24,32] = 80, [40], [48]
    assert [batch.ids for batch in loader] == [
        ["case_0", "case_1", "case_2", "case_3"],
        ["case_4"],
        ["case_5"],
    ]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_sample_costs_are_the_vision_tokens_the_processor_makes(
    family: str, tmp_path: Path, tiny_processors, tiny_vision
) -> None:
    from vlmlab.data.collate import SFTCollator

    volumes = {f"v{i}.npy": good_volume(t) for i, t in enumerate([4, 9, 24])}
    path = write_dataset(tmp_path, [row(i) for i in range(3)], volumes)
    processor = tiny_processors[family]
    module = CTReportDataModule(
        frames=VolumeFrames(num_frames=16, size=(64, 48)),
        root=str(path.parent),
        train_file=path.name,
        val_file=None,
        test_file=None,
        collator=SFTCollator(processor),
        vision=tiny_vision[family],
    )
    module.setup("fit")
    train = module.datasets["train"]
    video_token = processor.tokenizer.convert_tokens_to_ids(processor.video_token)
    counted = [
        float((module.collator.train([train[i]]).inputs["input_ids"] == video_token).sum()) for i in range(3)
    ]
    assert module.sample_costs("train") == counted
