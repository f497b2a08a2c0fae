"""Tests for ``python -m vlmlab.tools.convert``: hf (save_to_disk), verl and trl outputs, strict images."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.test_data_mcqa import good_row, png, split_samples, write_rows
from vlmlab.data.errors import DataError
from vlmlab.data.mcqa import validate_file
from vlmlab.data.synthetic.mcqa import write as write_mcqa
from vlmlab.models.processor import chat_template, qwen2_tokenizer_dir
from vlmlab.tasks.mcqa import format_answer, format_prompt
from vlmlab.tools.convert import main, to_hf, to_trl, to_verl

TRAINSET_COLUMNS = {
    "images",
    "question",
    "options",
    "answer_label",
    "answer",
    "reasoning",
    "dataset_name",
    "dataset_index",
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mcqa_src")
    write_mcqa(root, num_train=10, num_val=4, num_test=4, size=32)
    return root


@pytest.fixture(scope="module")
def hf_dir(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mcqa_hf") / "hf"
    report = to_hf(str(synthetic / "*.parquet"), out, strict_image=True, keep_first_k_images=6)
    assert (report.rows_in, report.rows_out) == (18, 18)
    return out


def decodes(item: dict[str, Any]) -> bool:
    Image.open(io.BytesIO(item["bytes"])).load()
    return True


# ------------------------------------------------------------------------------------------- hf


def test_hf_is_a_saved_dataset_with_image_bytes(hf_dir: Path, synthetic: Path) -> None:
    dataset = datasets.load_from_disk(str(hf_dir))
    assert set(dataset.column_names) == TRAINSET_COLUMNS
    assert isinstance(dataset.features["images"], datasets.List)
    assert isinstance(dataset.features["images"].feature, datasets.Image)
    assert isinstance(dataset[0]["images"][0], Image.Image)
    assert dataset.features["dataset_index"] == datasets.Value("int64")
    # Same rows as the source files (sorted: test, train, val), readable by the mcqa data source.
    source = [
        row
        for name in ("test", "train", "val")
        for row in pq.read_table(synthetic / f"{name}.parquet").to_pylist()
    ]
    raw = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
    assert [r["question"] for r in raw] == [r["question"] for r in source]
    assert [r["images"][0]["bytes"] for r in raw] == [r["images"][0]["bytes"] for r in source]
    assert [r["options"] for r in raw] == [r["options"] for r in source]
    assert validate_file(hf_dir) == []
    samples = split_samples(hf_dir)
    assert len(samples) == 18 and samples[0].metadata["source"] == str(hf_dir)


def test_hf_keep_first_k_and_num_proc(synthetic: Path, tmp_path: Path) -> None:
    one = to_hf(str(synthetic / "*.parquet"), tmp_path / "one", keep_first_k_images=1)
    two = to_hf(str(synthetic / "*.parquet"), tmp_path / "two", num_proc=2, keep_first_k_images=1)
    a, b = (datasets.load_from_disk(str(tmp_path / n)).with_format("arrow")[:] for n in ("one", "two"))
    assert a.equals(b) and one.rows_out == two.rows_out == 18
    assert set(pc.list_value_length(a.column("images")).to_pylist()) == {1}


def _mixed_images_file(tmp_path: Path) -> Path:
    broken = {"bytes": b"\x89PNG but not really", "path": None}
    good = {"bytes": png(), "path": None}
    rows = [good_row(0), good_row(1, images=[good, broken]), good_row(2, images=[broken]), good_row(3)]
    return write_rows(tmp_path / "mixed.parquet", rows)


def test_strict_image_is_an_error_naming_file_row_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mixed_images_file(tmp_path)
    with pytest.raises(DataError) as raised:
        to_hf(str(path), tmp_path / "out", strict_image=True)
    assert [str(p).split(": does")[0] for p in raised.value.problems] == [
        f"{path}:1: images[1]",
        f"{path}:2: images[0]",
    ]
    assert not (tmp_path / "out").exists()
    code = main(["hf", "--parquet_glob", str(path), "--out_dir", str(tmp_path / "cli"), "--strict_image"])
    assert code == 1
    assert f"{path}:1: images[1]: does not decode" in capsys.readouterr().err


def test_without_strict_image_bad_images_are_removed_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _mixed_images_file(tmp_path)
    report = to_hf(str(path), tmp_path / "out")
    out = capsys.readouterr().out
    assert [str(p).split(": ")[0] for p in report.removed_images] == [f"{path}:1", f"{path}:2"]
    assert [str(p) for p in report.dropped_rows] == [f"{path}:2: images: no image decodes: row dropped"]
    assert (report.rows_in, report.rows_out) == (4, 3)
    assert "removed 2 image(s) that do not decode" in out and "removed 1 row(s)" in out
    assert f"{path}:1: images[1]: does not decode" in out
    saved = datasets.load_from_disk(str(tmp_path / "out"))
    assert saved["dataset_index"] == [0, 1, 3]
    assert [len(images) for images in saved["images"]] == [1, 1, 1]


def test_hf_field_errors_always_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extra = pa.Table.from_pylist(
        [{**good_row(0), "misc": "x"}, {**good_row(1, answer_label="D"), "misc": "y"}]
    )
    pq.write_table(extra, tmp_path / "rows.parquet")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'rows.parquet'}:1: answer_label: 'D'")):
        to_hf(str(tmp_path / "rows.parquet"), tmp_path / "out")
    assert "dropping column(s) outside the trainset format: misc" in capsys.readouterr().out
    assert (
        main(["hf", "--parquet_glob", str(tmp_path / "none*.parquet"), "--out_dir", str(tmp_path / "o")]) == 1
    )


# ----------------------------------------------------------------------------------------- verl


def test_verl_fields_and_types(hf_dir: Path, tmp_path: Path) -> None:
    code = main(
        [
            "verl",
            "--local_data_dir",
            str(hf_dir),
            "--data_source",
            "synth_mcqa",
            "--ability",
            "medical_mcqa",
            "--split",
            "train",
            "--output_dir",
            str(tmp_path / "verl"),
            "--num_proc",
            "1",
        ]
    )
    assert code == 0
    table = pq.read_table(tmp_path / "verl" / "train.parquet")
    assert table.column_names == ["data_source", "prompt", "images", "ability", "reward_model", "extra_info"]
    source = datasets.load_from_disk(str(hf_dir)).cast_column(
        "images", datasets.List(datasets.Image(decode=False))
    )
    rows = table.to_pylist()
    assert len(rows) == 18
    for i, (row, original) in enumerate(zip(rows, source, strict=True)):
        assert row["data_source"] == "synth_mcqa" and row["ability"] == "medical_mcqa"
        [turn] = row["prompt"]
        assert (
            set(turn) == {"role", "content"} and turn["role"] == "user" and isinstance(turn["content"], str)
        )
        n = len(original["images"])
        assert turn["content"] == "<image>" * n + format_prompt(original["question"], original["options"])
        assert row["reward_model"] == {"style": "rule", "ground_truth": original["answer_label"]}
        assert row["reward_model"]["ground_truth"] in "ABCDE"
        assert row["extra_info"]["index"] == i and row["extra_info"]["split"] == "train"
        assert row["extra_info"]["dataset_name"] == original["dataset_name"]
        assert row["extra_info"]["dataset_index"] == original["dataset_index"]
        assert len(row["images"]) == n and all(decodes(item) for item in row["images"])
    # verl reads it with datasets.load_dataset("parquet"): images come back as PIL images.
    loaded = datasets.load_dataset(
        "parquet",
        data_files=str(tmp_path / "verl" / "train.parquet"),
        split="train",
        cache_dir=str(tmp_path / "c"),
    )
    assert isinstance(loaded[0]["images"][0], Image.Image)
    assert isinstance(loaded[0]["extra_info"]["index"], int)


def test_verl_prompt_renders_like_the_training_prompt(
    hf_dir: Path, tmp_path: Path, tiny_processors: dict
) -> None:
    """verl splits the text on <image> into items; the chat template must render the training prompt."""
    out = to_verl(hf_dir, "synth", tmp_path / "verl", split="test")
    assert out == tmp_path / "verl" / "test.parquet"
    processor = tiny_processors["qwen2_5_vl"]
    dataset = split_samples(hf_dir)
    for i, row in enumerate(pq.read_table(out).to_pylist()):
        assert row["extra_info"]["split"] == "test"
        content = [
            {"type": "image"} if part == "<image>" else {"type": "text", "text": part}
            for part in re.split("(<image>)", row["prompt"][0]["content"])
        ]
        ours = processor.apply_chat_template(dataset[i].messages, tokenize=False, add_generation_prompt=True)
        verl = processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        assert verl == ours


def test_verl_bad_rows_stop(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "rows.parquet", [good_row(0), good_row(1, dataset_name="")])
    with pytest.raises(DataError, match=re.escape(f"{path}:1: dataset_name: expected a non-empty string")):
        to_verl(path, "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ trl


def test_trl_fields_and_types(hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trl" / "train.parquet"
    args = [
        "trl",
        "--is_local",
        "true",
        "-d",
        str(hf_dir),
        "--tokenizer_name",
        "qwen2_5_vl",
        "--out_parquet",
        str(out),
    ]
    assert main([*args, "-n", "1", "--keep_in_memory", "True"]) == 0
    assert "[trl] wrote 18 row(s)" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.column_names == [
        "prompt",
        "completion",
        "images",
        "answer_label",
        "dataset_name",
        "dataset_index",
    ]
    source = datasets.load_from_disk(str(hf_dir)).cast_column(
        "images", datasets.List(datasets.Image(decode=False))
    )
    for row, original in zip(table.to_pylist(), source, strict=True):
        [user] = row["prompt"]
        n = len(original["images"])
        assert user["role"] == "user"
        assert [item["type"] for item in user["content"]] == ["image"] * n + ["text"]
        assert user["content"][-1]["text"] == format_prompt(original["question"], original["options"])
        assert row["completion"] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": format_answer(original["answer_label"], original["reasoning"])}
                ],
            }
        ]
        assert len(row["images"]) == n and all(decodes(item) for item in row["images"])
        assert row["answer_label"] == original["answer_label"]
    loaded = datasets.load_dataset(
        "parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "c")
    )
    assert isinstance(loaded[0]["images"][0], Image.Image)


def test_trl_tokenizer_folder_counts_and_refusals(
    hf_dir: Path, tmp_path: Path, tiny_processors: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "tokenizer"
    # A local tokenizer folder: the offline Qwen2 vocabulary plus the Qwen3-VL chat template.
    shutil.copytree(qwen2_tokenizer_dir(), folder)
    (folder / "chat_template.jinja").write_text(chat_template("qwen3_vl"))
    tokenizer = tiny_processors["qwen3_vl"].tokenizer  # the same vocabulary and template
    report = to_trl(hf_dir, str(folder), tmp_path / "t.parquet")
    assert report.rows == 18 and len(report.token_counts) == 18
    # Hand check of one count: the rendered conversation tokenised directly.
    first = pq.read_table(tmp_path / "t.parquet").slice(0, 1).to_pylist()[0]
    text = tokenizer.apply_chat_template(first["prompt"] + first["completion"], tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert report.token_counts[0] == len(tokenizer(text, add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="nothing is downloaded"):
        to_trl(hf_dir, str(tmp_path / "no_such_tokenizer"), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="is_local"):
        to_trl(hf_dir, "qwen2_5_vl", tmp_path / "x.parquet", is_local=False)
    bad = [
        "trl",
        "-d",
        str(hf_dir),
        "--tokenizer_name",
        "Org/NotCached",
        "--out_parquet",
        str(tmp_path / "y.parquet"),
    ]
    assert main(bad) == 2
    assert "Org/NotCached" in capsys.readouterr().err
