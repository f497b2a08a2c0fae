"""Readers robust to encodings and types (issue 11): annotation files that are not UTF-8, and MCQA image
items given as paths (``datasets.Image`` structs with null bytes) or with the wrong types.

Every input is written by the test; each case checks the validator's exit code and message, and that a
datamodule's setup raises a DataError naming file, row and field (or, under ``skip``, drops and counts).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.test_data_brats import hand_volumes, save
from tests.test_data_ct_report import dataset as ct_dataset
from tests.test_data_ct_report import good_volume
from tests.test_data_ct_report import row as ct_row
from tests.test_data_mcqa import good_row as mcqa_row
from tests.test_data_mcqa import png, split_samples
from tests.test_data_mcqa import write_rows as write_parquet
from tests.test_data_vtg import good_row as vtg_row
from tests.test_data_vtg import ramp_video, train_split
from vlmlab.data import brats
from vlmlab.data.errors import DataError
from vlmlab.data.lerobot import read_info
from vlmlab.tools.validate import main as validate_main

LATIN = "café".encode("latin-1")  # b"caf\xe9": not UTF-8


def validator(fmt: str, path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, list[str]]:
    """``python -m vlmlab.tools.validate FMT PATH``: (exit code, the problem lines it printed)."""
    code = validate_main([fmt, str(path), *flags])
    return code, capsys.readouterr().out.splitlines()[:-1]  # the last line is the count


# --------------------------------------------------------------------------- JSON (ct_report, brats)


def test_ct_report_json_not_utf8_mid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "v0.npy", good_volume())
    np.save(tmp_path / "v1.npy", good_volume())
    path = tmp_path / "train.json"  # the second row's report is latin-1
    path.write_bytes(json.dumps([ct_row(0), ct_row(1)]).replace("Report 1.", "Café.").encode("latin-1"))
    offset = path.read_bytes().index(0xE9)
    expected = f"{path}:-: encoding: not UTF-8: byte 0xe9 at offset {offset}"
    assert validator("ct_report", path, capsys) == (1, [expected])
    for policy in ("raise", "skip"):  # one JSON document: no row can be read, whatever the policy
        with pytest.raises(DataError) as raised:
            ct_dataset(path, on_bad_sample=policy)
        assert [str(p) for p in raised.value.problems] == [expected]


def test_utf16_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.json"
    path.write_bytes(json.dumps([ct_row(0)]).encode("utf-16"))  # with its byte-order mark
    code, lines = validator("ct_report", path, capsys)
    assert code == 1 and lines == [
        f"{path}:-: encoding: not UTF-8: byte 0xff at offset 0 (a UTF-16 byte-order mark: save the file as UTF-8)"
    ]
    with pytest.raises(DataError, match="UTF-16 byte-order mark"):
        ct_dataset(path)


def test_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    np.save(tmp_path / "v0.npy", good_volume())
    path = tmp_path / "train.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([ct_row(0)]).encode())
    assert len(ct_dataset(path)) == 1


def write_msd(root: Path, meta: bytes) -> Path:
    volumes, seg = hand_volumes()
    save(volumes[0], root / "imagesTr" / "BRATS_001.nii.gz")
    save(seg, root / "labelsTr" / "BRATS_001.nii.gz")
    (root / "dataset.json").write_bytes(meta)
    return root / "dataset.json"


@pytest.mark.parametrize(
    ("meta", "field", "words"),
    [
        ('{"name": "café"}'.encode("latin-1"), "encoding", "not UTF-8: byte 0xe9 at offset 13"),
        (b'["modality"]', "json", "expected an object, got list"),
        (b'{"modality": {"zero": "FLAIR"}}', "modality", "expected channel numbers as keys, got ['zero']"),
        (b'{"modality": ', "json", "line 1"),
    ],
    ids=["latin-1", "a list", "modality keys", "truncated"],
)
def test_brats_dataset_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], meta: bytes, field: str, words: str
) -> None:
    path = write_msd(tmp_path, meta)
    code, lines = validator("brats", tmp_path, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"{path}:") and f": {field}: " in lines[0]
    assert words in lines[0]
    with pytest.raises(DataError, match=f"dataset.json:.*{field}"):
        brats.find_cases(brats.BratsSource("msd", str(tmp_path)), tmp_path)


def test_brats_video_annotations_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = {"video": "v.mp4", "bbox_3d": [6, 4, 2, 12, 10, 4], "peak_slice": 2, "tumor_ratio": 0.05}
    first = json.dumps(good).encode() + b"\n"
    path = tmp_path / "ann.jsonl"
    path.write_bytes(first + json.dumps({**good, "id": "café"}, ensure_ascii=False).encode("latin-1") + b"\n")
    expected = f"{path}:line 2: encoding: not UTF-8: byte 0xe9 at offset {path.read_bytes().index(0xE9)}"
    assert validator("brats", path, capsys, "--no-decode") == (1, [expected])


def test_lerobot_info_json_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "info.json").write_bytes(b'{"features": {}, "robot": "' + LATIN + b'"}')
    offset = (tmp_path / "meta" / "info.json").read_bytes().index(0xE9)
    with pytest.raises(DataError, match=rf"info.json:-: encoding: not UTF-8: byte 0xe9 at offset {offset}$"):
        read_info(tmp_path)


# ---------------------------------------------------------------------------------- JSONL (vtg)


def test_vtg_line_not_utf8_is_one_bad_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    ramp_video(tmp_path / "videos/clip.mp4", 24, 4)  # 6 s, beside the annotation file
    lines = [json.dumps(vtg_row(qid=f"q{i}", sentence=f"row {i}")).encode() for i in range(3)]
    lines[1] = lines[1].replace(b"row 1", LATIN)
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected = f"{path}:2: encoding: not UTF-8: byte 0xe9 at offset {path.read_bytes().index(0xE9)}"
    assert validator("vtg", path, capsys, "--no-decode") == (1, [expected])
    with pytest.raises(DataError) as raised:
        train_split(path, tmp_path)
    assert [str(p) for p in raised.value.problems] == [expected]
    with caplog.at_level(logging.WARNING):
        kept = train_split(path, tmp_path, on_bad_sample="skip").datasets["train"]
    assert [kept[i].id for i in range(len(kept))] == ["q0", "q2"]
    assert f"{path}: skipped 1 of 3 rows (data.on_bad_sample=skip)" in caplog.text
    # U+2028 is valid inside a JSON string; str.splitlines would break the line at it.
    path.write_text(json.dumps(vtg_row(qid="q0", sentence="red\u2028square"), ensure_ascii=False) + "\n")
    assert validator("vtg", path, capsys, "--no-decode")[0] == 0
    assert train_split(path, tmp_path).datasets["train"][0].id == "q0"


# ------------------------------------------------------------------ MCQA image items as paths, and types


def path_rows(root: Path) -> list[dict]:
    """Row 0 reads its image from a file beside the parquet file; row 1's third image names a missing
    file; row 2's only image has neither bytes nor a path."""
    (root / "img").mkdir()
    (root / "img" / "blue.png").write_bytes(png((10, 20, 240)))
    item = {"bytes": None, "path": "img/blue.png"}
    return [
        mcqa_row(0, images=[item]),
        mcqa_row(1, images=[item, {"bytes": None, "path": str(root / "img" / "blue.png")}, {"bytes": None, "path": "gone.png"}]),
        mcqa_row(2, images=[{"bytes": None, "path": None}]),
    ]  # fmt: skip


@pytest.mark.parametrize("typed", [False, True], ids=["bytes typed null", "trainset schema"])
def test_mcqa_image_paths(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    typed: bool,
) -> None:
    # Untyped, pyarrow stores every null ``bytes`` as type null, which its binary_length cannot take.
    path = write_parquet(tmp_path / "train.parquet", path_rows(tmp_path), typed=typed)
    monkeypatch.chdir(tmp_path / "img")  # relative paths are the parquet file's, not the working folder's
    expected = [
        f"{path}:1: images[2]: no bytes and file not found: gone.png (in {tmp_path})",
        f"{path}:2: images[0]: neither image bytes nor a path",
    ]
    for flags in ([], ["--no-decode"]):
        assert validator("mcqa", path, capsys, *flags) == (1, expected)
    with pytest.raises(DataError) as raised:
        split_samples(path)
    assert [str(p) for p in raised.value.problems] == expected
    with caplog.at_level(logging.WARNING):
        kept = split_samples(path, on_bad_sample="skip")
    assert f"{path}: skipped 2 of 3 rows (data.on_bad_sample=skip)" in caplog.text
    assert len(kept) == 1 and kept[0].id == "toy-0"
    assert kept[0].messages[0]["content"][0]["image"].getpixel((0, 0)) == (10, 20, 240)


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (7, "expected image bytes, a {'bytes', 'path'} dict, a path or a PIL image, got int"),
        ({"bytes": 7, "path": None}, "'bytes' is int, expected bytes"),
        ({"bytes": "iVBORw0KGgo=", "path": None}, "'bytes' is str, expected bytes"),
    ],
    ids=["an int", "bytes an int", "bytes a string"],
)
def test_mcqa_image_items_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: object, words: str
) -> None:
    # An int is not taken for the byte count the start-of-run check uses in place of the bytes.
    path = write_parquet(tmp_path / "train.parquet", [mcqa_row(0, images=[item])], typed=False)
    for flags in ([], ["--no-decode"]):
        assert validator("mcqa", path, capsys, *flags) == (1, [f"{path}:0: images[0]: {words}"])
    with pytest.raises(DataError, match=rf"{path}:0: images\[0\]: "):
        split_samples(path)
    with pytest.raises(DataError, match="the train split is empty"):
        split_samples(path, on_bad_sample="skip")
