"""The multiple-choice VQA source (the MCQA recipe): reading, prompts, answers, checks, synthetic data."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from tests.helpers import compose_config
from tests.test_configs import assert_targets_bind
from vlmlab.data.collate import IGNORE_INDEX, SFTCollator
from vlmlab.data.errors import DataError, OnBadSample
from vlmlab.data.mcqa import (
    MCQADataModule,
    MCQATable,
    check_row,
    read_rows,
    to_sample,
    trainset_features,
    validate_file,
)
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.mcqa import COLOURS, QUADRANTS
from vlmlab.data.synthetic.mcqa import write as write_mcqa
from vlmlab.tasks.mcqa import ANSWER_FORMAT_INSTRUCTION, format_answer, format_prompt
from vlmlab.tools.synth import main as synth_main

INSTRUCTION = (
    "Answer with the letter of the correct option. First think step by step inside <think> </think> tags, "
    "then write only the letter inside <answer> </answer> tags, e.g. <think>...</think><answer>A</answer>."
)


def png(colour: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def good_row(index: int = 0, **changes: Any) -> dict[str, Any]:
    row = {
        "images": [{"bytes": png(), "path": None}],
        "question": "Which organ is shown?",
        "options": {"A": "liver", "B": "kidney", "C": "spleen", "D": None, "E": None},
        "answer_label": "B",
        "answer": "kidney",
        "reasoning": None,
        "dataset_name": "toy",
        "dataset_index": index,
    }
    row.update(changes)
    return row


def write_rows(path: Path, rows: list[dict[str, Any]], typed: bool = True) -> Path:
    """rows -> parquet; typed: with the trainset schema (else pyarrow infers the types)."""
    schema = trainset_features().arrow_schema if typed else None
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def read_split(
    spec: Path, on_bad_sample: OnBadSample = "raise", max_images: int | None = None
) -> MCQADataModule:
    """A datamodule whose train split is ``spec`` (a file, glob or folder), set up."""
    datamodule = MCQADataModule(
        root=str(spec.parent),
        train_file=str(spec),
        val_file=None,
        test_file=None,
        on_bad_sample=on_bad_sample,
        max_images=max_images,
    )
    datamodule.setup("fit")
    return datamodule


def split_samples(spec: Path, on_bad_sample: OnBadSample = "raise") -> Dataset:
    """The samples of ``spec`` as training reads them (the policy applied per source file)."""
    return read_split(spec, on_bad_sample).dataset("train")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_mcqa(tmp_path_factory.mktemp("mcqa"), num_train=24, num_val=6, num_test=6)


# ------------------------------------------------------------------------------- prompt / answer


def test_prompt_text_hand_checked() -> None:
    options = {"A": "liver", "B": " kidney ", "C": None, "D": "  ", "E": "spleen"}
    assert ANSWER_FORMAT_INSTRUCTION == INSTRUCTION
    assert format_prompt("  Which organ is shown?\n", options) == (
        "Which organ is shown?\nA. liver\nB. kidney\nE. spleen\n" + INSTRUCTION
    )


def test_sft_answer_with_and_without_reasoning() -> None:
    assert format_answer("B", "The organ is bean shaped. ") == (
        "<think>The organ is bean shaped.</think><answer>B</answer>"
    )
    assert format_answer("B", None) == "<answer>B</answer>"
    assert format_answer("B", "  ") == "<answer>B</answer>"


def test_sample_from_row(tmp_path: Path) -> None:
    second = {"bytes": png((20, 200, 20), 16), "path": None}
    row = good_row(7, reasoning="Bean shaped.", images=[{"bytes": png(), "path": None}, second])
    path = tmp_path / "rows.parquet"
    sample = to_sample(row, 3, path)
    assert isinstance(sample, Sample)
    assert sample.id == "toy-7"
    [turn] = sample.messages
    assert turn["role"] == "user"
    kinds = [item["type"] for item in turn["content"]]
    assert kinds == ["image", "image", "text"]
    first = turn["content"][0]["image"]
    assert isinstance(first, Image.Image) and first.mode == "RGB" and first.size == (32, 32)
    assert first.getpixel((5, 5)) == (200, 30, 30)
    assert (
        turn["content"][2]["text"] == "Which organ is shown?\nA. liver\nB. kidney\nC. spleen\n" + INSTRUCTION
    )
    assert sample.answer == "<think>Bean shaped.</think><answer>B</answer>"
    assert sample.target == {
        "answer_label": "B",
        "options": {"A": "liver", "B": "kidney", "C": "spleen"},
        "dataset_name": "toy",
        "dataset_index": 7,
    }
    assert sample.metadata == {
        "source": str(path),
        "row": 3,
        "answer": "kidney",
        "has_reasoning": True,
        "num_images": 2,
        "num_images_used": 2,
    }
    one = to_sample(row, 3, path, max_images=1)
    assert [item["type"] for item in one.messages[0]["content"]] == ["image", "text"]
    assert one.metadata["num_images_used"] == 1


def test_options_as_json_string_and_pil_images(tmp_path: Path) -> None:
    """The MCQA recipe's converter stores options as a JSON string; decoded datasets give PIL images."""
    row = good_row(options='{"A": "liver", "B": "kidney", "C": null}', images=[Image.new("L", (8, 8), 90)])
    assert check_row(row, 0, "x.parquet", decode=True) == []
    sample = to_sample(row, 0, tmp_path / "x.parquet")
    assert sample.target["options"] == {"A": "liver", "B": "kidney"}
    assert sample.messages[0]["content"][0]["image"].getpixel((0, 0)) == (90, 90, 90)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"dataset_index": "7"}, "dataset_index", "expected an integer"),
        ({"dataset_index": True}, "dataset_index", "expected an integer"),
        ({"dataset_index": 7.0}, "dataset_index", "expected an integer"),
        ({"options": '{"A": "x", "F": "y"}'}, "options", "unknown option letter"),
        ({"options": "not json"}, "options", "JSON"),
        ({"options": {"A": "x", "B": 3}}, "options", "option B is int"),
        ({"answer_label": 1}, "answer_label", "expected a letter"),
        ({"reasoning": ["a"]}, "reasoning", "expected a string or null"),
        ({"images": [42.0]}, "images[0]", "got float"),
        ({"images": "a.png"}, "images", "expected a list"),
    ],
)
def test_check_row_types(change: dict[str, Any], field: str, words: str) -> None:
    problems = check_row(good_row(**change), 4, "data/x.parquet")
    assert [p.field for p in problems] == [field]
    assert str(problems[0]).startswith(f"data/x.parquet:4: {field}: ")
    assert words in problems[0].problem


# ------------------------------------------------------------------------------------ bad input


def _no_images(row: dict) -> dict:
    return {**row, "images": None}


BAD_CASES = [
    # (case, field, words in the problem, only found when decoding)
    ({"question": ""}, "question", "non-empty string", False),
    ({"answer_label": "E"}, "answer_label", "'E' is not one of the options A, B, C", False),
    ({"answer_label": None}, "answer_label", "missing", False),
    ({"options": {"A": None, "B": "kidney", "C": "", "D": None, "E": None}}, "options", "at least 2", False),
    ({"dataset_name": None}, "dataset_name", "missing", False),
    ({"images": None}, "images", "expected a list of images, got nothing", False),
    ({"images": []}, "images", "no image", False),
    ({"images": [{"bytes": None, "path": "missing.png"}]}, "images[0]", "file not found: missing.png", False),
    ({"images": [{"bytes": b"not a png", "path": None}]}, "images[0]", "does not decode", True),
]


@pytest.mark.parametrize(("change", "field", "words", "decode_only"), BAD_CASES)
def test_bad_input_names_file_row_and_field(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: dict[str, Any],
    field: str,
    words: str,
    decode_only: bool,
) -> None:
    path = write_rows(tmp_path / "bad.parquet", [good_row(0), good_row(1, **change), good_row(2)])
    problems = validate_file(path)
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(f"{path}:1: {field}: ")
    assert words in problems[0].problem
    if decode_only:
        assert validate_file(path, decode=False) == []
        dataset = split_samples(path)  # cheap checks pass; decoding the row names it
        with pytest.raises(DataError, match=rf"{path}:1: images\[0\]: does not decode"):
            dataset[1]
        return
    with pytest.raises(DataError) as raised:
        split_samples(path)
    assert f"{path}:1: {field}: " in str(raised.value)
    with caplog.at_level(logging.WARNING):
        skipping = split_samples(path, on_bad_sample="skip")
    assert len(skipping) == 2 and f"{path}: skipped 1 of 3 rows" in caplog.text
    assert [skipping[i].id for i in range(2)] == ["toy-0", "toy-2"]


def test_missing_files_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no parquet file"):
        split_samples(tmp_path / "nothing-*.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    [problem] = validate_file(tmp_path / "broken.parquet")
    assert problem.field == "file" and "not a readable parquet file" in problem.problem
    # A file written without the images column: every row says so.
    path = tmp_path / "no_images.parquet"
    pq.write_table(
        pa.Table.from_pylist([{k: v for k, v in good_row(i).items() if k != "images"} for i in range(2)]),
        path,
    )
    assert [str(p) for p in validate_file(path)] == [
        f"{path}:{i}: images: expected a list of images, got nothing" for i in range(2)
    ]


@pytest.mark.parametrize("storage", ["struct", "binary", "relative_path", "absolute_path"])
def test_image_storage_forms(tmp_path: Path, storage: str) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png((10, 20, 240)))
    item = {
        "struct": {"bytes": png((10, 20, 240)), "path": None},
        "binary": png((10, 20, 240)),
        "relative_path": "img/a.png",
        "absolute_path": str(tmp_path / "img" / "a.png"),
    }[storage]
    path = write_rows(tmp_path / "rows.parquet", [good_row(0, images=[item])], typed=storage == "struct")
    assert validate_file(path) == [] and validate_file(path, decode=False) == []
    image = split_samples(path)[0].messages[0]["content"][0]["image"]
    assert image.getpixel((0, 0)) == (10, 20, 240)


def test_glob_folder_and_several_sources(tmp_path: Path) -> None:
    write_rows(tmp_path / "train-0.parquet", [good_row(0), good_row(1)])
    write_rows(tmp_path / "train-1.parquet", [good_row(2), good_row(3, answer_label="Z")])
    with pytest.raises(DataError) as raised:
        split_samples(tmp_path / "train-*.parquet")
    assert [str(p).split(": ")[0] for p in raised.value.problems] == [f"{tmp_path / 'train-1.parquet'}:1"]
    checks = read_rows(MCQATable(tmp_path / "train-*.parquet"))  # one Checked per source file
    assert [c.where for c in checks] == [tmp_path / "train-0.parquet", tmp_path / "train-1.parquet"]
    assert [[len(found) for found in c.problems] for c in checks] == [[0, 0], [0, 1]]
    skipping = split_samples(tmp_path, on_bad_sample="skip")  # a folder: every parquet file in it
    assert [skipping[i].id for i in range(len(skipping))] == ["toy-0", "toy-1", "toy-2"]
    assert skipping[2].metadata["source"] == str(tmp_path / "train-1.parquet")
    assert skipping[2].metadata["row"] == 0


def test_sample_costs_count_the_images_shown(tmp_path: Path) -> None:
    two = [{"bytes": png(), "path": None}, {"bytes": png((0, 0, 200)), "path": None}]
    path = write_rows(tmp_path / "rows.parquet", [good_row(0, images=two), good_row(1)])
    assert read_split(path).sample_costs("train") == [2.0, 1.0]
    assert read_split(path, max_images=1).sample_costs("train") == [1.0, 1.0]
    with pytest.raises(ValueError, match="max_images=0"):
        MCQADataModule(root=str(tmp_path), max_images=0)


# ------------------------------------------------------------------------------------ synthetic


def test_synthetic_reads_back(synthetic: dict[str, Path]) -> None:
    assert set(synthetic) == {"train", "val", "test"}
    assert all(path.name == f"{split}.parquet" for split, path in synthetic.items())
    rows = []
    for split, count in (("train", 24), ("val", 6), ("test", 6)):
        assert validate_file(synthetic[split]) == []
        table = pq.read_table(synthetic[split])
        assert table.num_rows == count
        assert b"huggingface" in table.schema.metadata  # datasets loads the images as PIL
        rows += table.to_pylist()
    names = {row["dataset_name"] for row in rows}
    assert names == {"synth_colour", "synth_quadrant", "synth_which_image"}
    keys = [(row["dataset_name"], row["dataset_index"]) for row in rows]
    assert len(set(keys)) == len(keys)
    with_reasoning = [row["reasoning"] is not None for row in rows]
    assert any(with_reasoning) and not all(with_reasoning)
    assert all(
        isinstance(item["bytes"], bytes) and item["path"] is None for row in rows for item in row["images"]
    )
    dataset = split_samples(synthetic["train"])
    answers = {dataset[i].answer.startswith("<think>") for i in range(len(dataset))}
    assert answers == {True, False}


def _lesion_pixels(image: Image.Image) -> np.ndarray:
    """bool [H, W]: pixels brighter than the dark background (~40 +- 6) in some channel."""
    return np.asarray(image.convert("RGB")).max(axis=2) > 110


def test_synthetic_answers_are_in_the_pixels(synthetic: dict[str, Path]) -> None:
    seen = set()
    for path in synthetic.values():
        for row in pq.read_table(path).to_pylist():
            images = [Image.open(io.BytesIO(item["bytes"])) for item in row["images"]]
            answer = row["options"][row["answer_label"]]
            assert answer == row["answer"]
            seen.add(row["dataset_name"])
            if row["dataset_name"] == "synth_colour":
                pixels = np.asarray(images[0])[_lesion_pixels(images[0])]
                assert tuple(int(c) for c in np.median(pixels, axis=0)) == COLOURS[answer]
            elif row["dataset_name"] == "synth_quadrant":
                ys, xs = np.nonzero(_lesion_pixels(images[0]))
                half = images[0].size[0] / 2
                vertical = "upper" if ys.max() < half else "lower" if ys.min() >= half else "straddles"
                horizontal = "left" if xs.max() < half else "right" if xs.min() >= half else "straddles"
                assert answer == f"{vertical} {horizontal}" and answer in QUADRANTS
            else:
                has_lesion = [bool(_lesion_pixels(image).sum() > 50) for image in images]
                assert has_lesion == ([True, False] if answer == "the first image" else [False, True])
            if row["reasoning"] is not None:
                assert row["answer"].split()[-1] in row["reasoning"]
    assert len(seen) == 3


def test_synthetic_deterministic_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def snapshot(root: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(root.iterdir())}

    kwargs = {"num_train": 4, "num_val": 2, "num_test": 0, "size": 32}
    write_mcqa(tmp_path / "a", seed=3, **kwargs)
    write_mcqa(tmp_path / "b", seed=3, **kwargs)
    write_mcqa(tmp_path / "c", seed=4, **kwargs)
    a, b, c = (snapshot(tmp_path / name) for name in "abc")
    assert a == b and a != c
    assert pq.read_table(tmp_path / "a" / "test.parquet").num_rows == 0
    with pytest.raises(ValueError, match="size"):
        write_mcqa(tmp_path / "d", size=16)
    assert (
        synth_main(["mcqa", str(tmp_path / "e"), "--num-train", "3", "--num-val", "1", "--num-test", "1"])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[0] == f"train: {tmp_path / 'e' / 'train.parquet'}"
    assert pq.read_table(tmp_path / "e" / "train.parquet").num_rows == 3


def test_synthetic_kinds_choose_the_questions(tmp_path: Path) -> None:
    write_mcqa(
        tmp_path / "q", num_train=12, num_val=4, num_test=0, kinds=["synth_quadrant"], shuffle_options=False
    )
    rows = pq.read_table(tmp_path / "q" / "train.parquet").to_pylist()
    assert {row["dataset_name"] for row in rows} == {"synth_quadrant"}
    # Fixed options: each letter is one quadrant, in QUADRANTS order.
    assert all(row["answer_label"] == "ABCD"[QUADRANTS.index(row["answer"])] for row in rows)
    assert [row["dataset_index"] for row in rows] == list(range(12))
    with pytest.raises(ValueError, match="kinds"):
        write_mcqa(tmp_path / "x", kinds=["synth_shape"])
    with pytest.raises(ValueError, match="kinds"):
        write_mcqa(tmp_path / "x", kinds=[])


# ---------------------------------------------------------------------------- datamodule / config


def test_datamodule_collates_with_the_tiny_processor(tmp_path: Path, tiny_processors: dict) -> None:
    processor = tiny_processors["qwen2_5_vl"]
    datamodule = MCQADataModule(
        root=str(tmp_path / "synthetic"),
        collator=SFTCollator(processor=processor),
        batch_size=3,
        eval_batch_size=2,
        synthesize=True,
        synth_rows=6,
        max_images=1,
    )
    datamodule.prepare_data()  # nothing there yet: writes the synthetic set
    assert (tmp_path / "synthetic" / "train.parquet").is_file()
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 6
    assert all(isinstance(datamodule.datasets["train"][i], Sample) for i in range(6))
    batch = next(iter(datamodule.train_dataloader()))
    assert len(batch) == 3 and batch.labels is not None
    assert batch.inputs["pixel_values"].shape[0] > 0
    assert batch.inputs["image_grid_thw"].shape[0] == 3  # max_images=1: one image per sample
    tokenizer = processor.tokenizer
    for b in range(3):
        learned = batch.labels[b][batch.labels[b] != IGNORE_INDEX]
        assert tokenizer.decode(learned) == batch.answers[b] + "<|im_end|>"
        assert batch.answers[b].endswith(f"<answer>{batch.targets[b]['answer_label']}</answer>")
    val = next(iter(datamodule.val_dataloader()))
    assert val.prompt_inputs is not None and val.prompt_inputs["input_ids"].shape[0] == 2
    assert {t["dataset_name"] for t in val.targets} <= {"synth_colour", "synth_quadrant", "synth_which_image"}


def test_config_composes_with_preset_tiny(tmp_path: Path) -> None:
    cfg = compose_config("train", ["data=mcqa", "preset=tiny"], tmp_path)
    OmegaConf.resolve(cfg)
    assert_targets_bind(cfg)
    assert cfg.data.root.endswith("synthetic/mcqa") and cfg.data.synthesize
    datamodule = instantiate(cfg.data, _partial_=True, _convert_="all")(collator=None)
    assert isinstance(datamodule, MCQADataModule)
    assert datamodule.files == {"train": "train.parquet", "val": "val.parquet", "test": "test.parquet"}
    plain = compose_config("train", ["data=mcqa"], tmp_path)
    assert plain.data.on_bad_sample == "raise" and not plain.data.synthesize
