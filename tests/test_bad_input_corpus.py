"""The bad-input corpus (issue 11): malformed and unusual inputs over the five formats, written by code.

Each input starts as a valid synthetic dataset (``vlmlab.data.synthetic.*``, written once per format and
copied per input) and is then damaged in one way: truncated, corrupt and zero-byte files, NaN / inf
voxels, encodings that are not UTF-8, a segmentation without tumour, wrong ranks and shapes, broken
mp4s, corrupt image bytes, a ``reward_bins`` of the wrong length, missing frames, fields and files,
wrong types. A few inputs are unusual but valid (a UTF-8 byte-order mark, CRLF lines, uncompressed
NIfTI, paths instead of image bytes, ...). For every input, one test asserts:

* the validator (``python -m vlmlab.tools.validate FORMAT PATH``): exit 1 and one
  ``PATH:ROW: field: problem`` line per problem (0 and ``OK`` for the valid ones);
* training's start with ``data.check=full`` and ``data.on_bad_sample=raise``: one DataError whose
  problems are the validator's lines (the same function checks both);
* with ``skip``: exactly the bad rows dropped and counted in the split's ledger (what
  ``data.max_bad_fraction`` bounds), and the whole split iterates in full batches (the last one the
  remainder) with nothing left to skip;
* for damage that only decoding finds, that ``data.check=headers`` (training's default) and
  ``--check headers`` do not see it, and that there ``skip`` replaces the sample when it fails to decode
  (``tests/test_decode_errors.py``), batches keeping their size.

A file or dataset that cannot be read at all (a JSON file that is not UTF-8, a zero-byte parquet, a
LeRobot dataset lerobot cannot load) has no row to drop: ``skip`` stops with the same message.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import io
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.test_decode_errors import IdsCollator, brats_builder, save_nifti
from vlmlab.data.base import VisionLanguageDataModule
from vlmlab.data.errors import DataError, skip_notes
from vlmlab.data.volume import VolumeFrames
from vlmlab.tools.validate import main as validate_main

BATCH = 2
LATIN = "café".encode("latin-1")  # b"caf\xe9": not UTF-8
LEFT = "observation.images.cam_left_wrist"


@dataclass
class Case:
    """One input: where the validator looks, how training's datamodule is built, what both must say.

    build: a set-up datamodule on the input (keyword arguments: the datamodule's). rows: the train
    split's rows read at start. expected: per problem, ``(head, excerpt)``: its line starts with
    ``head`` (``PATH:ROW: field:``) and contains ``excerpt``. dropped: rows ``skip`` drops.
    fatal: the place itself is unusable, ``skip`` stops too. decode_only: only ``check=full`` sees it.
    decode_skips: under ``check=headers`` and ``skip``, the samples replaced at decode time (None: as
    many as ``dropped``; 0 where decoding succeeds on the bad row, which only the full check refuses).
    """

    fmt: str
    target: Path
    build: Callable[..., VisionLanguageDataModule]
    rows: int
    expected: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0
    fatal: bool = False
    decode_only: bool = False
    decode_skips: int | None = None


# ---------------------------------------------------------------------------- valid sets, written once


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small valid dataset per format (lazily: only the formats a run needs are written)."""
    return _Bases(tmp_path_factory.mktemp("bases"))


class _Bases(dict):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, fmt: str) -> Path:
        root = self.folder / fmt
        WRITERS[fmt](root)
        self[fmt] = root
        return root


def _write_ct(root: Path) -> None:
    from vlmlab.data.synthetic.ct_report import write

    write(root, num_train=7, num_val=0, num_test=0, slices=16, size=48)


def _write_vtg(root: Path) -> None:
    from vlmlab.data.synthetic.vtg import write

    write(root, num_train=7, num_val=0, num_test=0, size=32)


def _write_mcqa(root: Path) -> None:
    from vlmlab.data.synthetic.mcqa import write

    write(root, num_train=7, num_val=0, num_test=0, size=32, kinds=["synth_colour"])


def _write_brats(root: Path) -> None:
    from vlmlab.data.synthetic.brats import write

    write(root, num_train=5, num_val=0, num_test=0, shape=(24, 24, 24))


def _write_lerobot(root: Path) -> None:
    from vlmlab.data.synthetic.lerobot import write

    write(root, num_episodes=3, frames_per_episode=3, size=16)


def _write_lerobot_video(root: Path) -> None:
    from vlmlab.data.synthetic.lerobot import write

    write(root, num_episodes=2, frames_per_episode=4, size=16, video=True)


WRITERS: dict[str, Callable[[Path], None]] = {
    "ct_report": _write_ct,
    "vtg": _write_vtg,
    "mcqa": _write_mcqa,
    "brats": _write_brats,
    "lerobot": _write_lerobot,
    "lerobot_video": _write_lerobot_video,
}


def copy_of(bases: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    root = tmp_path / fmt
    shutil.copytree(bases[fmt], root)
    return root


# ---------------------------------------------------------------------------- ct_report (JSON + volumes)


def ct_case(root: Path, damage: Callable[[Path, list[dict]], list[tuple[str, str]]], **case: Any) -> Case:
    from vlmlab.data.ct_report import CTReportDataModule

    path = root / "train.json"
    expected = damage(path, json.loads(path.read_text(encoding="utf-8-sig")))
    frames = VolumeFrames(num_frames=4, temporal_method="sample", size=(16, 16))

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        settings = {"train_file": "train.json", "val_file": None, "test_file": None, **kwargs}
        datamodule = CTReportDataModule(
            frames=frames, root=str(root), collator=IdsCollator(), batch_size=BATCH, **settings
        )
        datamodule.setup("fit")
        return datamodule

    dropped = 1 if expected and not case.get("fatal") else 0  # every damage here is one row's
    return Case("ct_report", path, build, 7, expected, dropped=dropped, **case)


def volume(path: Path, rows: list[dict], row: int = 3) -> Path:
    return path.parent / rows[row]["videos"][0]


def ct_nan(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
    data = np.load(volume(path, rows))
    data[2, 5, 5] = np.nan
    np.save(volume(path, rows), data)
    return [(f"{path}:3: videos[0]:", "non-finite values (NaN or inf)")]


def ct_inf_nifti(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
    data = np.load(volume(path, rows)).transpose(2, 1, 0).copy()  # NIfTI (X, Y, Z): slices last
    data[4, 4, 4] = np.inf
    name = "volumes/row3.nii.gz"
    save_nifti(data, path.parent / name)
    rows[3]["videos"] = [name]
    path.write_text(json.dumps(rows))
    return [(f"{path}:3: videos[0]:", "non-finite values (NaN or inf)")]


def ct_file(content: Callable[[Path], None], excerpt: str) -> Callable[..., list[tuple[str, str]]]:
    """Damage row 3's volume file with ``content(path)``; the problem names it."""

    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        content(volume(path, rows))
        return [(f"{path}:3: videos[0]: {volume(path, rows)}:", excerpt)]

    return damage


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def ct_rows(change: Callable[[list[dict]], None], *problems: tuple[str, str]) -> Callable[..., Any]:
    """Change the rows themselves (row 3 unless said otherwise); ``problems``: (ROW: field:, excerpt)."""

    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        change(rows)
        path.write_text(json.dumps(rows))
        return [(f"{path}:{head}", excerpt) for head, excerpt in problems]

    return damage


def ct_bytes(encode: Callable[[str], bytes], excerpt: str) -> Callable[..., Any]:
    """Rewrite the whole file's bytes (an encoding problem is the file's: ROW ``-``)."""

    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        path.write_bytes(encode(json.dumps(rows, indent=1)))
        return [(f"{path}:-: encoding:", excerpt)] if excerpt else []

    return damage


def _set(row: int, key: str, value: Any) -> Callable[[list[dict]], None]:
    """Set ``rows[row][key]`` (None: remove the key)."""

    def change(rows: list[dict]) -> None:
        if value is None:
            rows[row].pop(key)
        else:
            rows[row][key] = value

    return change


def _set_content(rows: list[dict]) -> None:
    rows[3]["messages"][1]["content"] = 42


def _two_placeholders(rows: list[dict]) -> None:
    rows[3]["messages"][0]["content"] = "<video><video> Describe."


def _as_volume(array: np.ndarray) -> Callable[[Path], None]:
    return lambda file: np.save(file, array)


def _as_int16(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
    """Unusual but valid: an int16 volume with a constant slab (a window of width zero there)."""
    data = np.load(volume(path, rows)).astype(np.int16)
    data[:4] = 0
    np.save(volume(path, rows), data)
    np.save(volume(path, rows, 4), np.zeros((16, 48, 48), np.float32))  # all zero: a blank scan
    return []


CT_CASES: dict[str, Callable[[Path], Case]] = {
    "ct_nan_voxel_npy": lambda r: ct_case(r, ct_nan, decode_only=True),
    "ct_inf_voxel_nifti": lambda r: ct_case(r, ct_inf_nifti, decode_only=True),
    "ct_zero_byte_npy": lambda r: ct_case(r, ct_file(lambda f: f.write_bytes(b""), "unreadable volume file")),
    "ct_truncated_npy": lambda r: ct_case(r, ct_file(truncate, "unreadable volume file")),
    "ct_garbage_npy": lambda r: ct_case(
        r, ct_file(lambda f: f.write_bytes(b"\x93NUMPY garbage" * 9), "unreadable volume file")
    ),
    "ct_wrong_rank_2d": lambda r: ct_case(
        r, ct_file(_as_volume(np.zeros((48, 48), np.float32)), "expected a volume of shape [1,T,H,W]")
    ),
    "ct_leading_dim_not_1": lambda r: ct_case(
        r, ct_file(_as_volume(np.zeros((2, 16, 48, 48), np.float32)), "leading dim must be 1")
    ),
    "ct_empty_dimension": lambda r: ct_case(
        r, ct_file(_as_volume(np.zeros((0, 48, 48), np.float32)), "volume has an empty dimension")
    ),
    "ct_string_dtype": lambda r: ct_case(
        r, ct_file(_as_volume(np.full((4, 8, 8), "x")), "non-numeric dtype")
    ),
    "ct_missing_volume_file": lambda r: ct_case(r, ct_file(lambda f: f.unlink(), "file not found")),
    "ct_missing_id": lambda r: ct_case(
        r, ct_rows(_set(3, "id", None), ("3: id:", "missing or not a string"))
    ),
    "ct_content_wrong_type": lambda r: ct_case(
        r, ct_rows(_set_content, ("3: messages[1].content:", "expected a string"))
    ),
    "ct_placeholders_without_videos": lambda r: ct_case(
        r, ct_rows(_two_placeholders, ("3: messages:", "2 <video> placeholder(s) in user turns but 1 video"))
    ),
    "ct_json_not_utf8": lambda r: ct_case(
        r,
        ct_bytes(lambda t: t.replace("ct_report_003", "caf\u00e9").encode("latin-1"), "not UTF-8"),
        fatal=True,
    ),
    "ct_json_utf16_bom": lambda r: ct_case(
        r, ct_bytes(lambda t: t.encode("utf-16"), "a UTF-16 byte-order mark"), fatal=True
    ),
    "ct_valid_utf8_bom": lambda r: ct_case(r, ct_bytes(lambda t: codecs.BOM_UTF8 + t.encode(), "")),
    "ct_valid_int16_and_blank_volumes": lambda r: ct_case(r, _as_int16),
}


# ---------------------------------------------------------------------------- vtg (JSONL + mp4)


def vtg_case(root: Path, damage: Callable[[Path, list[dict]], list[tuple[str, str]]], **case: Any) -> Case:
    from vlmlab.data.video import VideoFrames
    from vlmlab.data.vtg import VTGDataModule

    path = root / "train.jsonl"
    expected = damage(path, [json.loads(line) for line in path.read_text().splitlines()])

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = VTGDataModule(
            frames=VideoFrames(max_frames=4, height=32, width=32),
            root=str(root),
            val_file=None,
            test_file=None,
            collator=IdsCollator(),
            batch_size=BATCH,
            **kwargs,
        )
        datamodule.setup("fit")
        return datamodule

    dropped = 1 if expected and not case.get("fatal") else 0
    return Case("vtg", path, build, 7, expected, dropped=dropped, **case)


def write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def vtg_video(content: Callable[[Path], None], field: str, excerpt: str) -> Callable[..., Any]:
    """Damage line 3's mp4 with ``content(path)``."""

    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        video = path.parent / rows[2]["video"]
        content(video)
        return [(f"{path}:3: {field}:", excerpt)]

    return damage


def corrupt_last_packet(video: Path) -> None:
    """Overwrite the bytes of the mp4's last video packet: the last frame no longer decodes."""
    import av

    with av.open(str(video)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    pos, size = packets[-1]
    data = bytearray(video.read_bytes())
    data[pos : pos + size] = b"\xff" * size
    video.write_bytes(bytes(data))


def vtg_rows(change: Callable[[list[dict]], None], field: str, excerpt: str) -> Callable[..., Any]:
    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        change(rows)
        write_lines(path, rows)
        return [(f"{path}:3: {field}:", excerpt)]

    return damage


def _trim_outside(rows: list[dict]) -> None:
    rows[2].update(video_start=100.0, video_end=110.0, duration=10.0, timestamp=[1.0, 2.0])


def vtg_line(line: Callable[[dict], bytes], field: str, excerpt: str) -> Callable[..., Any]:
    """Replace line 3's bytes: a line that is not a row is one bad row of its own."""

    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        lines = [json.dumps(row).encode() for row in rows]
        lines[2] = line(rows[2])
        path.write_bytes(b"".join(raw + b"\n" for raw in lines))
        return [(f"{path}:3: {field}:", excerpt)]

    return damage


def vtg_utf16(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
    path.write_bytes("".join(json.dumps(row) + "\n" for row in rows).encode("utf-16"))
    return [(f"{path}:-: encoding:", "a UTF-16 byte-order mark")]


def vtg_bom_crlf(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
    """Unusual but valid: a UTF-8 byte-order mark, CRLF line ends, blank lines, unknown keys."""
    rows[2]["annotator"] = {"name": "caf\u00e9", "pass": 2}
    text = "\r\n\r\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\r\n\r\n"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    return []


VTG_CASES: dict[str, Callable[[Path], Case]] = {
    "vtg_zero_byte_mp4": lambda r: vtg_case(
        r, vtg_video(lambda v: v.write_bytes(b""), "video", "cannot open video"), decode_only=True
    ),
    "vtg_truncated_mp4": lambda r: vtg_case(
        r, vtg_video(truncate, "video", "cannot open video"), decode_only=True
    ),
    "vtg_garbage_mp4": lambda r: vtg_case(
        r,
        vtg_video(lambda v: v.write_bytes(b"\x00garbage" * 64), "video", "cannot open video"),
        decode_only=True,
    ),
    "vtg_mp4_last_frame_corrupt": lambda r: vtg_case(
        r, vtg_video(corrupt_last_packet, "video", "cannot decode video"), decode_only=True
    ),
    "vtg_missing_mp4": lambda r: vtg_case(
        r, vtg_video(lambda v: v.unlink(), "video", "video file not found")
    ),
    "vtg_timestamp_after_duration": lambda r: vtg_case(
        r, vtg_rows(_set(2, "timestamp", [1.0, 99.0]), "timestamp", "end 99.0 is beyond the duration")
    ),
    "vtg_duration_not_the_videos": lambda r: vtg_case(
        r,
        vtg_rows(_set(2, "duration", 60.0), "duration", "60.0 s but the video is"),
        decode_only=True,
        decode_skips=0,  # the clip decodes: only the full check compares its length
    ),
    "vtg_trim_outside_the_video": lambda r: vtg_case(
        r, vtg_rows(_trim_outside, "video_start", "holds no part of the video"), decode_only=True
    ),
    "vtg_missing_sentence": lambda r: vtg_case(r, vtg_rows(_set(2, "sentence", None), "sentence", "missing")),
    "vtg_duration_wrong_type": lambda r: vtg_case(
        r, vtg_rows(_set(2, "duration", "9 s"), "duration", "expected a number of seconds, got '9 s'")
    ),
    "vtg_line_not_utf8": lambda r: vtg_case(
        r,
        vtg_line(
            lambda row: json.dumps(row).encode().replace(b"square", LATIN), "encoding", "not UTF-8: byte 0xe9"
        ),
    ),
    "vtg_line_not_json": lambda r: vtg_case(
        r, vtg_line(lambda row: json.dumps(row).encode()[:-9], "json", "(column")
    ),
    "vtg_file_utf16": lambda r: vtg_case(r, vtg_utf16, fatal=True),
    "vtg_valid_bom_crlf_blank_lines": lambda r: vtg_case(r, vtg_bom_crlf),
}


# ---------------------------------------------------------------------------- mcqa (parquet)


def mcqa_case(root: Path, damage: Callable[[Path, list[dict]], list[tuple[str, str]]], **case: Any) -> Case:
    from vlmlab.data.mcqa import MCQADataModule

    path = root / "train.parquet"
    expected = damage(path, pq.read_table(path).to_pylist())  # before any reader maps the file

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = MCQADataModule(
            root=str(root), val_file=None, test_file=None, collator=IdsCollator(), batch_size=BATCH, **kwargs
        )
        datamodule.setup("fit")
        return datamodule

    dropped = 1 if expected and not case.get("fatal") else 0
    return Case("mcqa", path, build, 7, expected, dropped=dropped, **case)


def write_parquet(path: Path, rows: list[dict], typed: bool = True) -> None:
    from vlmlab.data.mcqa import trainset_features

    schema = trainset_features().arrow_schema if typed else None
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def png(size: int = 32, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def mcqa_rows(
    change: Callable[[Path, list[dict]], None], field: str = "", excerpt: str = "", typed: bool = True
) -> Callable[..., Any]:
    """Change the rows (row 3 unless said otherwise) and write them back; no ``field``: still valid."""

    def damage(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
        change(path, rows)
        write_parquet(path, rows, typed)
        return [(f"{path}:3: {field}:", excerpt)] if field else []

    return damage


def _image(item: dict) -> Callable[[Path, list[dict]], None]:
    def change(path: Path, rows: list[dict]) -> None:
        rows[3]["images"] = [item]

    return change


def _image_file(content: bytes, name: str = "scan.png") -> Callable[[Path, list[dict]], None]:
    """Row 3's image given by a relative path (null bytes) to a file holding ``content``."""

    def change(path: Path, rows: list[dict]) -> None:
        (path.parent / name).write_bytes(content)
        rows[3]["images"] = [{"bytes": None, "path": name}]

    return change


def _field(key: str, value: Any) -> Callable[[Path, list[dict]], None]:
    def change(path: Path, rows: list[dict]) -> None:
        rows[3][key] = value

    return change


def _options_as_json(bad: str | None) -> Callable[[Path, list[dict]], None]:
    """Options as JSON strings (the MCQA recipe's converter writes them so); row 3's is ``bad``."""

    def change(path: Path, rows: list[dict]) -> None:
        for row in rows:
            row["options"] = json.dumps(row["options"])
        if bad is not None:
            rows[3]["options"] = bad

    return change


def mcqa_zero_bytes(path: Path, rows: list[dict]) -> list[tuple[str, str]]:
    path.write_bytes(b"")
    return [(f"{path}:-: file:", "not a readable parquet file")]


MCQA_CASES: dict[str, Callable[[Path], Case]] = {
    "mcqa_corrupt_image_bytes": lambda r: mcqa_case(
        r,
        mcqa_rows(
            _image({"bytes": b"\x89PNG\r\n\x1a\n" + b"not an image" * 8, "path": None}),
            "images[0]",
            "does not decode",
        ),
        decode_only=True,
    ),
    "mcqa_truncated_png": lambda r: mcqa_case(
        r,
        mcqa_rows(_image({"bytes": png()[:60], "path": None}), "images[0]", "does not decode"),
        decode_only=True,
    ),
    "mcqa_image_file_corrupt": lambda r: mcqa_case(
        r, mcqa_rows(_image_file(b"GIF89a" + b"\x00" * 20), "images[0]", "does not decode"), decode_only=True
    ),
    "mcqa_image_file_missing": lambda r: mcqa_case(
        r,
        mcqa_rows(_image({"bytes": None, "path": "nowhere.png"}), "images[0]", "no bytes and file not found"),
    ),
    "mcqa_image_empty_bytes_no_path": lambda r: mcqa_case(
        r, mcqa_rows(_image({"bytes": b"", "path": None}), "images[0]", "neither image bytes nor a path")
    ),
    "mcqa_no_images": lambda r: mcqa_case(
        r, mcqa_rows(_field("images", []), "images", "no image (an empty list)")
    ),
    "mcqa_missing_question": lambda r: mcqa_case(
        r, mcqa_rows(_field("question", None), "question", "missing")
    ),
    "mcqa_answer_label_not_an_option": lambda r: mcqa_case(
        r, mcqa_rows(_field("answer_label", "Z"), "answer_label", "'Z' is not one of the options")
    ),
    "mcqa_options_wrong_type": lambda r: mcqa_case(
        r, mcqa_rows(_options_as_json('["red", "blue"]'), "options", "expected a dict", typed=False)
    ),
    "mcqa_zero_byte_parquet": lambda r: mcqa_case(r, mcqa_zero_bytes, fatal=True),
    "mcqa_valid_image_as_relative_path": lambda r: mcqa_case(r, mcqa_rows(_image_file(png(24, "L")))),
    "mcqa_valid_options_as_json_strings": lambda r: mcqa_case(
        r, mcqa_rows(_options_as_json(None), typed=False)
    ),
}


# ---------------------------------------------------------------------------- brats (NIfTI case folders)


def brats_case(root: Path, damage: Callable[[Path], list[tuple[str, str]]], **case: Any) -> Case:
    folder = sorted(p for p in (root / "train").iterdir() if p.is_dir())[1]  # case (row) 1
    expected = damage(folder)
    build = functools.partial(brats_builder(root), batch_size=BATCH)

    return Case("brats", root / "train", build, 5, expected, dropped=1 if expected else 0, **case)


def nifti(folder: Path, name: str) -> Path:
    return folder / f"{folder.name}-{name}.nii.gz"


def brats_file(name: str, content: Callable[[Path], None], excerpt: str) -> Callable[[Path], Any]:
    """Damage case 1's ``name`` file (a modality or seg) with ``content(path)``."""

    def damage(folder: Path) -> list[tuple[str, str]]:
        content(nifti(folder, name))
        return [(f"{nifti(folder, name)}:1: {name}:", excerpt)]

    return damage


def _nifti_of(data: np.ndarray) -> Callable[[Path], None]:
    return lambda path: save_nifti(data, path)


def _with_voxel(value: float) -> Callable[[Path], None]:
    def content(path: Path) -> None:
        import nibabel as nib

        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        data[5, 6, 7] = value
        save_nifti(data, path)

    return content


def brats_missing(folder: Path) -> list[tuple[str, str]]:
    nifti(folder, "t1n").unlink()
    return [(f"{folder / '*-t1n.nii.gz'}:1: t1n:", "file not found")]


def brats_twice(folder: Path) -> list[tuple[str, str]]:
    shutil.copy(nifti(folder, "t2f"), folder / "extra_t2f.nii.gz")
    return [(f"{folder / '*-t2f.nii.gz'}:1: t2f:", "2 files match")]


def brats_uncompressed(folder: Path) -> list[tuple[str, str]]:
    """Unusual but valid: ``.nii`` files (not gzipped) named with ``_`` before the modality."""
    for name in ("t1c", "t1n", "t2f", "t2w", "seg"):
        path = nifti(folder, name)
        (folder / f"{folder.name}_{name}.nii").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    return []


def brats_one_timepoint(folder: Path) -> list[tuple[str, str]]:
    """Unusual but valid: a modality stored 4-D with a single time point (X, Y, Z, 1)."""
    import nibabel as nib

    path = nifti(folder, "t2w")
    save_nifti(np.asarray(nib.load(str(path)).dataobj)[..., None], path)
    return []


BRATS_CASES: dict[str, Callable[[Path], Case]] = {
    "brats_truncated_nii_gz": lambda r: brats_case(
        r, brats_file("t1c", truncate, "unreadable NIfTI file"), decode_only=True
    ),
    "brats_seg_without_tumour": lambda r: brats_case(
        r,
        brats_file("seg", _nifti_of(np.zeros((24, 24, 24), np.uint8)), "no tumour voxels"),
        decode_only=True,
    ),
    "brats_nan_voxel": lambda r: brats_case(
        r, brats_file("t2w", _with_voxel(np.nan), "non-finite values"), decode_only=True
    ),
    "brats_inf_voxel": lambda r: brats_case(
        r, brats_file("t1n", _with_voxel(-np.inf), "non-finite values"), decode_only=True
    ),
    "brats_missing_modality": lambda r: brats_case(r, brats_missing),
    "brats_two_files_one_modality": lambda r: brats_case(r, brats_twice),
    "brats_shape_mismatch": lambda r: brats_case(
        r, brats_file("t2w", _nifti_of(np.ones((20, 24, 24), np.int16)), "differs from t1c's [24, 24, 24]")
    ),
    "brats_modality_wrong_rank": lambda r: brats_case(
        r, brats_file("t1c", _nifti_of(np.ones((24, 24, 24, 2), np.int16)), "expected a 3-D volume")
    ),
    "brats_zero_byte_seg": lambda r: brats_case(
        r, brats_file("seg", lambda p: p.write_bytes(b""), "unreadable NIfTI file")
    ),
    "brats_garbage_nii_gz": lambda r: brats_case(
        r, brats_file("t2f", lambda p: p.write_bytes(b"\x1f\x8b garbage" * 40), "unreadable NIfTI file")
    ),
    "brats_valid_uncompressed_nii": lambda r: brats_case(r, brats_uncompressed),
    "brats_valid_single_timepoint_4d": lambda r: brats_case(r, brats_one_timepoint),
}


# ---------------------------------------------------------------------------- lerobot (a LeRobot v3.0 folder)


def lerobot_case(
    root: Path, damage: Callable[[Path], list[tuple[str, str]]], frames: int = 9, **case: Any
) -> Case:
    from vlmlab.data.lerobot import LeRobotRewardDataModule

    expected = damage(root)  # before any reader: lerobot caches the frames when it opens the folder

    def build(**kwargs: Any) -> VisionLanguageDataModule:
        datamodule = LeRobotRewardDataModule(
            str(root),
            val_episodes=None,
            test_episodes=None,
            collator=IdsCollator(),
            batch_size=BATCH,
            **kwargs,
        )
        datamodule.setup("fit")
        return datamodule

    dropped = len({head for head, _ in expected}) if not case.get("fatal") else 0  # one frame a problem
    return Case("lerobot", root, build, frames, expected, dropped=dropped, **case)


def data_file(root: Path) -> Path:
    [file] = sorted((root / "data").glob("*/*.parquet"))
    return file


def set_column(
    root: Path, key: str, change: Callable[[list[Any]], None], kind: pa.DataType | None = None
) -> None:
    """Rewrite one column of the data parquet (``kind``: a new type for it, the metadata kept)."""
    file = data_file(root)
    table = pq.read_table(file)
    values = table.column(key).to_pylist()
    change(values)
    index = table.schema.get_field_index(key)
    column = pa.field(key, kind) if kind is not None else table.schema.field(index)
    table = table.set_column(index, column, pa.array(values, type=column.type))
    pq.write_table(table.replace_schema_metadata(pq.read_schema(file).metadata), file)


def camera_image(pos: int, camera: str, content: bytes, excerpt: str) -> Callable[[Path], Any]:
    def damage(root: Path) -> list[tuple[str, str]]:
        set_column(root, camera, lambda values: values.__setitem__(pos, {"bytes": content, "path": None}))
        return [(f"{root}:{pos}: {camera}:", excerpt)] if excerpt else []

    return damage


def _value(pos: int, value: Any) -> Callable[[list[Any]], None]:
    return lambda values: values.__setitem__(pos, value)


def lerobot_nan_bins(root: Path) -> list[tuple[str, str]]:
    set_column(root, "reward_bins", _value(2, [float("nan"), 0.0, 0.0, 0.0]))
    return [(f"{root}:2: reward_bins:", "NaN or infinity (episode 0, frame 2)")]


def lerobot_unknown_task(root: Path) -> list[tuple[str, str]]:
    set_column(root, "task_index", _value(4, 9))
    return [(f"{root}:4: task:", "task_index 9 has no task")]


def lerobot_short_bins(root: Path) -> list[tuple[str, str]]:
    set_column(root, "reward_bins", _value(4, [0.0, 1.0, 0.0]), pa.list_(pa.float32()))
    return [(f"{data_file(root)}:4: reward_bins:", "3 values, info.json declares shape [4] (episode 1)")]


def lerobot_missing_episode(root: Path) -> list[tuple[str, str]]:
    file = data_file(root)
    table = pq.read_table(file)
    keep = [i for i, e in enumerate(table.column("episode_index").to_pylist()) if e != 1]
    pq.write_table(table.take(keep), file)
    [episodes] = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    return [(f"{episodes}:1: length:", "episode 1 has 0 of its 3 frames in data/")]


def lerobot_zero_byte_data(root: Path) -> list[tuple[str, str]]:
    data_file(root).write_bytes(b"")
    return [(f"{data_file(root)}:-: file:", "cannot read")]


def video_file(root: Path, camera: str = LEFT) -> Path:
    [file] = sorted((root / "videos" / camera).glob("*/*.mp4"))
    return file


def lerobot_video_last_frame(root: Path) -> list[tuple[str, str]]:
    """The mp4's last packet: the decoder reads ahead, so every frame of episode 1 (4 to 7) fails; the
    validator used to decode episode 1's first frame only, and name that one."""
    corrupt_last_packet(video_file(root))
    return [
        (f"{video_file(root)}:{pos}: {LEFT}:", f"(at 0.{pos}00 s; episode 1, frame {pos - 4})")
        for pos in range(4, 8)
    ]


def lerobot_video_missing(root: Path) -> list[tuple[str, str]]:
    file = video_file(root)
    file.unlink()
    return [(f"{file}:-: {LEFT}:", "video file not found")]


def video_case(damage: Callable[[Path], list[tuple[str, str]]], **case: Any) -> Callable[[Path], Case]:
    return lambda root: lerobot_case(root, damage, frames=8, **case)


LEROBOT_CASES: dict[str, Callable[[Path], Case]] = {
    # Position 5 is not an episode's first frame (0, 3, 6): the validator used to decode only those.
    "lerobot_late_frame_camera_image_corrupt": lambda r: lerobot_case(
        r, camera_image(5, LEFT, b"garbage!" * 8, "does not decode as an image"), decode_only=True
    ),
    "lerobot_camera_image_truncated_png": lambda r: lerobot_case(
        r,
        camera_image(7, "observation.images.cam_high", png(16)[:50], "does not decode as an image"),
        decode_only=True,
    ),
    "lerobot_camera_image_wrong_size": lambda r: lerobot_case(
        r,
        camera_image(8, LEFT, png(8), "decoded 8x8, info.json says (16, 16, 3)"),
        decode_only=True,
        decode_skips=0,  # the image decodes: only the full check compares its size
    ),
    "lerobot_nan_reward_bins": lambda r: lerobot_case(r, lerobot_nan_bins),
    "lerobot_task_index_unknown": lambda r: lerobot_case(r, lerobot_unknown_task),
    "lerobot_reward_bins_wrong_length": lambda r: lerobot_case(r, lerobot_short_bins, fatal=True),
    "lerobot_episode_frames_missing": lambda r: lerobot_case(r, lerobot_missing_episode, fatal=True),
    "lerobot_zero_byte_data_parquet": lambda r: lerobot_case(r, lerobot_zero_byte_data, fatal=True),
    "lerobot_valid_greyscale_camera_image": lambda r: lerobot_case(
        r, camera_image(4, LEFT, png(16, "L"), "")
    ),
    "lerobot_video_last_frame_corrupt": video_case(lerobot_video_last_frame, decode_only=True),
    "lerobot_video_file_missing": video_case(lerobot_video_missing, fatal=True),
}


# ---------------------------------------------------------------------------- the corpus


CORPUS: dict[str, tuple[str, Callable[[Path], Case]]] = {
    **{name: ("ct_report", make) for name, make in CT_CASES.items()},
    **{name: ("vtg", make) for name, make in VTG_CASES.items()},
    **{name: ("mcqa", make) for name, make in MCQA_CASES.items()},
    **{name: ("brats", make) for name, make in BRATS_CASES.items()},
    **{
        name: ("lerobot_video" if "video" in name else "lerobot", make)
        for name, make in LEROBOT_CASES.items()
    },
}
# decord's messages carry the time of day, PIL's an object's address: compare them without.
_VOLATILE = re.compile(r"\[\d\d:\d\d:\d\d\] | object at 0x[0-9a-f]+")


def same(lines: list[str]) -> list[str]:
    return [_VOLATILE.sub("", line) for line in lines]


def matches(lines: list[str], expected: list[tuple[str, str]]) -> bool:
    return len(lines) == len(expected) and all(
        line.startswith(head) and excerpt in line
        for line, (head, excerpt) in zip(lines, expected, strict=True)
    )


def validator(case: Case, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, list[str]]:
    """``python -m vlmlab.tools.validate FORMAT PATH``: (exit code, the problem lines it printed)."""
    code = validate_main([case.fmt, str(case.target), *flags])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == (f"{case.target}: {len(lines) - 1} problem(s)" if code else f"{case.target}: OK")
    return code, lines[:-1]


def batches(datamodule: VisionLanguageDataModule) -> tuple[list[list[str]], int]:
    """The ids of every training batch of one epoch, and how many samples stood in for skipped ones."""
    seen, skipped = [], 0
    for batch in datamodule.train_dataloader():
        skipped += len(skip_notes(batch.metadata))
        seen.append(list(batch.ids))
    return seen, skipped


def full_batches(count: int) -> list[int]:
    return [BATCH] * (count // BATCH) + [count % BATCH] * (count % BATCH > 0)


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_input(
    name: str, bases: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, make = CORPUS[name]
    case = make(copy_of(bases, base, tmp_path))

    # The validator: exit 1 naming file, row and field (0 and OK for a valid input).
    code, lines = validator(case, capsys)
    assert code == (1 if case.expected else 0), lines
    assert matches(lines, case.expected), lines

    # Training's start, data.check=full, on_bad_sample=raise: one DataError with the validator's lines.
    if case.expected:
        with pytest.raises(DataError) as raised:
            case.build(check="full")
        message = str(raised.value)
        assert message.startswith(f"{len(lines)} problem(s) in the data:\n"), message
        assert same([str(p) for p in raised.value.problems]) == same(lines)
        assert "Traceback" not in message
    else:
        assert len(case.build(check="full").datasets["train"]) == case.rows

    # skip: the bad rows dropped and counted (a place that cannot be read at all stops the run).
    if case.fatal:
        with pytest.raises(DataError) as raised:
            case.build(check="full", on_bad_sample="skip", max_bad_fraction=1.0)
        assert same([str(p) for p in raised.value.problems]) == same(lines)
    else:
        datamodule = case.build(check="full", on_bad_sample="skip", max_bad_fraction=1.0)
        ledger = datamodule.ledgers["train"]
        assert (ledger.rows, ledger.dropped_rows) == (case.rows, case.dropped)
        kept = case.rows - case.dropped
        seen, skipped = batches(datamodule)
        assert skipped == 0 and len({i for ids in seen for i in ids}) == kept  # nothing left to skip
        assert [len(ids) for ids in seen] == full_batches(kept)

    # Damage only decoding finds: training's default check (headers) and --check headers keep the row;
    # under skip the sample is replaced when it fails to decode, batches keep their size.
    if case.decode_only:
        assert validator(case, capsys, "--check", "headers") == (0, [])
        datamodule = case.build(on_bad_sample="skip", max_bad_fraction=1.0)
        assert (len(datamodule.datasets["train"]), datamodule.ledgers["train"].dropped_rows) == (case.rows, 0)
        seen, skipped = batches(datamodule)
        assert skipped == (case.dropped if case.decode_skips is None else case.decode_skips)
        assert [len(ids) for ids in seen] == full_batches(case.rows)


def test_every_data_config_names_the_check_and_a_typo_is_refused(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from vlmlab.data.ct_report import CTReportDataModule

    conf = Path(__file__).resolve().parents[1] / "conf" / "data"
    for path in sorted(conf.glob("*.yaml")):
        assert OmegaConf.load(path).check == "headers", path  # training's default: headers only
    with pytest.raises(ValueError, match=re.escape("data.check='ful'; expected 'headers' or 'full'")):
        CTReportDataModule(frames=VolumeFrames(), root=str(tmp_path), check="ful")


def test_no_decode_is_the_headers_check(
    bases: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CORPUS["ct_nan_voxel_npy"][1](copy_of(bases, "ct_report", tmp_path))
    assert validator(case, capsys, "--no-decode") == validator(case, capsys, "--check", "headers") == (0, [])
    assert validator(case, capsys, "--check", "full")[0] == validator(case, capsys)[0] == 1
