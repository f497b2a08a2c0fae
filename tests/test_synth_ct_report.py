"""Tests for the synthetic ct_report writer and the synth CLI: layout, determinism, reports that match the volumes."""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from vlmlab.data.synthetic.ct_report import CT_REPORT_PROMPT, Lesion, describe_lesions
from vlmlab.data.synthetic.ct_report import write as write_ct_report
from vlmlab.data.volume import load_volume
from vlmlab.tools.synth import main

WORDS = {"no": 0, "one": 1, "two": 2, "three": 3}
BRIGHT = 128.0  # tissue ~N(40, 5), lesions ~N(220, 5): nothing else crosses this
LARGE_MIN_VOXELS = 200  # small (radius <= 3, z radius 2) <= ~80 voxels; large (radius >= 5) >= ~400


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("ct_report")
    return out, write_ct_report(out)


def load_split(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def components(mask: np.ndarray) -> list[np.ndarray]:
    """26-connected components of a 3D bool mask, each an [N, 3] array of (z, y, x) voxels.

    (scipy.ndimage.label would do; a BFS over the few bright voxels keeps the test dependency-free.)
    """
    remaining = {tuple(int(i) for i in p) for p in np.argwhere(mask)}
    offsets = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    found = []
    while remaining:
        start = remaining.pop()
        queue, voxels = deque([start]), [start]
        while queue:
            z, y, x = queue.popleft()
            for dz, dy, dx in offsets:
                n = (z + dz, y + dy, x + dx)
                if n in remaining:
                    remaining.remove(n)
                    queue.append(n)
                    voxels.append(n)
        found.append(np.array(voxels))
    return found


def measured_lesions(volume: np.ndarray) -> dict[str, tuple[int, int]]:
    """{side: (small, large)} counted from bright components; x < W/2 is the patient's right."""
    width = volume.shape[-1]
    counts = {"right": [0, 0], "left": [0, 0]}
    for comp in components(volume > BRIGHT):
        xs = comp[:, 2]
        assert xs.max() < width / 2 or xs.min() >= width / 2, "lesion straddles the midline"
        side = "right" if xs.max() < width / 2 else "left"
        counts[side][int(len(comp) >= LARGE_MIN_VOXELS)] += 1
        assert len(np.unique(comp[:, 0])) >= 3, "a lesion should span several slices"
    return {side: (small, large) for side, (small, large) in counts.items()}


def parse_side(text: str) -> tuple[int, int]:
    if text == "no lesion":
        return 0, 0
    counts = {"small": 0, "large": 0}
    for part in text.split(" and "):
        m = re.fullmatch(r"(one|two|three) (small|large) lesions?", part)
        assert m, f"unexpected phrase {part!r}"
        counts[m.group(2)] = WORDS[m.group(1)]
    return counts["small"], counts["large"]


def parse_report(report: str) -> dict[str, tuple[int, int]]:
    """{side: (small, large)} stated by a report; also checks the totals and impression agree."""
    if report == "Findings: no lesion. Impression: normal study.":
        return {"right": (0, 0), "left": (0, 0)}
    m = re.fullmatch(
        r"Findings: (\w+) lesions?\. Right: (.*?)\. Left: (.*?)\. Impression: (single lesion|multiple lesions)\.",
        report,
    )
    assert m, f"unexpected report {report!r}"
    sides = {"right": parse_side(m.group(2)), "left": parse_side(m.group(3))}
    total = sum(sum(v) for v in sides.values())
    assert WORDS[m.group(1)] == total >= 1
    assert m.group(4) == ("single lesion" if total == 1 else "multiple lesions")
    return sides


def test_split_files_and_records(dataset: tuple[Path, dict[str, Path]]) -> None:
    out, paths = dataset
    assert set(paths) == {"train", "val", "test"}
    assert paths == {split: out / f"{split}.json" for split in ("train", "val", "test")}
    ids = []
    for split, expected_len in (("train", 48), ("val", 8), ("test", 8)):
        records = load_split(paths[split])
        assert len(records) == expected_len
        for rec in records:
            assert set(rec) == {"id", "messages", "videos"}
            assert rec["messages"][0] == {"role": "user", "content": CT_REPORT_PROMPT}
            assert rec["messages"][0]["content"].startswith("<video>\n")
            assert rec["messages"][1]["role"] == "assistant"
            assert rec["videos"] == [f"volumes/{rec['id']}.npy"]  # relative to the json's folder
            assert (paths[split].parent / rec["videos"][0]).is_file()
            ids.append(rec["id"])
    assert ids == [f"ct_report_{i:03d}" for i in range(64)]
    assert len(list((out / "volumes").glob("*.npy"))) == 64


def test_volume_shapes_ranks_and_values(dataset: tuple[Path, dict[str, Path]]) -> None:
    out, _ = dataset
    for i in range(64):
        path = out / "volumes" / f"ct_report_{i:03d}.npy"
        raw = np.load(path)
        assert raw.dtype == np.float32
        assert raw.shape == ((1, 24, 64, 64) if i % 2 == 0 else (24, 64, 64))  # both ranks exercised
        volume = load_volume(path)
        assert volume.shape == (24, 64, 64)
        assert volume.min() >= 0 and volume.max() <= 255
        assert not volume[:, 0, 0].any() and not volume[:, -1, -1].any()  # air outside the body
        tissue = volume[(volume > 0) & (volume < BRIGHT)]
        assert 35 < tissue.mean() < 45


def test_reports_match_drawn_lesions(dataset: tuple[Path, dict[str, Path]]) -> None:
    out, paths = dataset
    seen_totals, seen = set(), set()
    for split in paths:
        for rec in load_split(paths[split]):
            stated = parse_report(rec["messages"][1]["content"])
            measured = measured_lesions(load_volume(out / rec["videos"][0]))
            assert stated == measured, rec["id"]
            seen_totals.add(sum(sum(v) for v in stated.values()))
            seen |= {
                (side, size)
                for side, v in stated.items()
                for size, n in zip(("small", "large"), v, strict=True)
                if n
            }
    # The default set covers every lesion count, both sides and both sizes.
    assert seen_totals == {0, 1, 2, 3}
    assert seen == {(side, size) for side in ("right", "left") for size in ("small", "large")}


def test_describe_lesions_vocabulary() -> None:
    def lesion(side: str, large: bool) -> Lesion:
        return Lesion(side=side, large=large, z=10, y=30, x=10, r=6 if large else 2, rz=5 if large else 2)

    assert describe_lesions([]) == "Findings: no lesion. Impression: normal study."
    assert describe_lesions([lesion("right", True), lesion("left", False)]) == (
        "Findings: two lesions. Right: one large lesion. Left: one small lesion. Impression: multiple lesions."
    )
    assert describe_lesions([lesion("left", False)]) == (
        "Findings: one lesion. Right: no lesion. Left: one small lesion. Impression: single lesion."
    )
    three = [lesion("left", True), lesion("left", False), lesion("left", False)]
    assert describe_lesions(three) == (
        "Findings: three lesions. Right: no lesion. Left: two small lesions and one large lesion. "
        "Impression: multiple lesions."
    )


def test_deterministic_for_seed(tmp_path: Path) -> None:
    def snapshot(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    kwargs = {"num_train": 6, "num_val": 2, "num_test": 2}
    write_ct_report(tmp_path / "a", seed=7, **kwargs)
    write_ct_report(tmp_path / "b", seed=7, **kwargs)
    write_ct_report(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (snapshot(tmp_path / name) for name in "abc")
    assert len(a) == 3 + 10
    assert a == b
    assert a != c


def test_other_sizes_and_validation(tmp_path: Path) -> None:
    paths = write_ct_report(tmp_path, num_train=4, num_val=0, num_test=1, slices=16, size=49, seed=3)
    assert load_split(paths["val"]) == []
    for split in ("train", "test"):
        for rec in load_split(paths[split]):
            volume = load_volume(tmp_path / rec["videos"][0])
            assert volume.shape == (16, 49, 49)
            assert parse_report(rec["messages"][1]["content"]) == measured_lesions(volume)
    with pytest.raises(ValueError, match="size"):
        write_ct_report(tmp_path / "small", size=32)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ct_report", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0] == f"train: {tmp_path / 'train.json'}"
    assert len(load_split(tmp_path / "train.json")) == 48

    out = tmp_path / "opts"
    assert (
        main(["ct_report", str(out), "--num-train", "2", "--num-val", "1", "--num-test", "1", "--seed", "5"])
        == 0
    )
    assert [len(load_split(out / f"{s}.json")) for s in ("train", "val", "test")] == [2, 1, 1]
    with pytest.raises(SystemExit):
        main(["no_such_format", str(out)])
