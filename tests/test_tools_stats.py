"""`python -m vlmlab.tools.stats lerobot ROOT`: class balance per task and frames per episode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from vlmlab.data.lerobot import DEFAULT_CAMERAS
from vlmlab.data.synthetic.lerobot import write as write_lerobot
from vlmlab.tools import stats

# Three episodes of 2, 3 and 1 frames: (reward_bins, task). Classes by hand: argmax, 0 for all zeros.
EPISODES = [
    [([0, 0, 1], "fold"), ([0, 1, 0], "fold")],  # classes 2, 1
    [([0, 0, 0], "stack"), ([1, 0, 0], "stack"), ([0, 0, 1], "stack")],  # 0, 0, 2
    [([0, 1, 0], "fold")],  # 1
]


@pytest.fixture(scope="module")
def hand_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stats") / "hand"
    camera = {"dtype": "image", "shape": (16, 16, 3), "names": ["height", "width", "channels"]}
    features = {key: dict(camera) for key in DEFAULT_CAMERAS}
    features["reward_bins"] = {"dtype": "float32", "shape": (3,), "names": None}
    dataset = LeRobotDataset.create(
        repo_id="test/stats", fps=10, features=features, root=root, video_backend="pyav"
    )
    for frames in EPISODES:
        for bins, task in frames:
            frame = {key: np.zeros((16, 16, 3), np.uint8) for key in DEFAULT_CAMERAS}
            dataset.add_frame({**frame, "reward_bins": np.asarray(bins, np.float32), "task": task})
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    return root


def test_lerobot_stats_by_hand(hand_root: Path) -> None:
    result = stats.lerobot_stats(hand_root)
    assert (result["num_episodes"], result["num_frames"], result["num_classes"], result["num_tasks"]) == (
        3,
        6,
        3,
        2,
    )
    assert result["invalid_frames"] == 0
    assert result["class_counts"] == [2, 2, 2] and result["class_fractions"] == pytest.approx([1 / 3] * 3)
    assert result["tasks"]["fold"] == {
        "episodes": 2,
        "frames": 3,
        "class_counts": [0, 2, 1],
        "class_fractions": pytest.approx([0, 2 / 3, 1 / 3]),
    }
    assert result["tasks"]["stack"]["class_counts"] == [2, 0, 1] and result["tasks"]["stack"]["episodes"] == 1
    lengths = result["frames_per_episode"]
    assert (lengths["min"], lengths["mean"], lengths["max"]) == (1, 2.0, 3)
    assert lengths["episodes"] == [
        {"episode_index": 0, "task": "fold", "frames": 2, "final_class": 1},
        {"episode_index": 1, "task": "stack", "frames": 3, "final_class": 2},
        {"episode_index": 2, "task": "fold", "frames": 1, "final_class": 1},
    ]
    # More classes than bins: the extra class is counted (as zero); a class >= num_classes is invalid.
    assert stats.lerobot_stats(hand_root, num_classes=4)["class_counts"] == [2, 2, 2, 0]
    two = stats.lerobot_stats(hand_root, num_classes=2)
    assert two["invalid_frames"] == 2 and two["class_counts"] == [2, 2]
    assert two["frames_per_episode"]["episodes"][1]["final_class"] is None  # its last frame is class 2


def test_cli_prints_tables_json_and_a_plot(
    hand_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stats.main(["lerobot", str(hand_root), "--plot", str(tmp_path / "balance.png")]) == 0
    out = capsys.readouterr().out
    assert "episodes: 3  frames: 6  classes: 3  tasks: 2" in out
    assert "frames per episode: min 1  mean 2.0  max 3" in out
    fold = next(line for line in out.splitlines() if line.strip().startswith("fold"))
    assert fold.split()[1:4] == ["2", "3", "0"] and "2 ( 66.7%)" in fold  # episodes, frames, class 0, class 1
    assert (tmp_path / "balance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats.main(["lerobot", str(hand_root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["class_counts"] == [2, 2, 2]


def test_cli_on_a_synthetic_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_lerobot(tmp_path / "synthetic", num_episodes=4, frames_per_episode=5, size=16)["root"]
    result = stats.lerobot_stats(root)
    assert (result["num_episodes"], result["num_frames"], result["num_classes"]) == (4, 20, 4)
    assert sum(result["class_counts"]) == 20 and sum(e["frames"] for e in result["tasks"].values()) == 20
    # Even episodes succeed: progress climbs round(3 t / 4) = 0, 1, 2, 2, 3 and ends in the top class.
    finals = [e["final_class"] for e in result["frames_per_episode"]["episodes"]]
    assert finals[0] == finals[2] == 3 and finals[1] < 3 and finals[3] < 3
    assert stats.main(["lerobot", str(root)]) == 0
    assert "frames per episode: min 5  mean 5.0  max 5" in capsys.readouterr().out


def test_unreadable_dataset_names_the_file(
    tmp_path: Path, hand_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stats.main(["lerobot", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'missing'}:-: root: ")
    assert stats.main(["lerobot", str(hand_root), "--cameras", "observation.images.top"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        f"{hand_root / 'meta' / 'info.json'}:-: observation.images.top: camera feature missing"
    )
