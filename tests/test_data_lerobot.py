"""The LeRobot reward source (the robot reward recipe): lerobot-written datasets read back as samples."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image
import pytest
import torch
from hydra.utils import instantiate
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from tests.helpers import compose_config
from vlmlab.data.base import SampleDataset
from vlmlab.data.collate import vision_items
from vlmlab.data.errors import DataError, OnBadSample, keep_good
from vlmlab.data.lerobot import (
    DEFAULT_CAMERAS,
    DEFAULT_REPO_ID,
    LeRobotFrames,
    LeRobotRewardDataModule,
    VideoDecodeError,
    decode_video_frame,
    frame_to_pil,
    split_episodes,
    validate_file,
)
from vlmlab.data.sample import Sample
from vlmlab.data.synthetic.lerobot import draw_progress_bar, episode_labels
from vlmlab.data.synthetic.lerobot import write as write_lerobot
from vlmlab.tasks.robot_reward import label_from_reward_bins, labels_from_reward_bins
from vlmlab.tools import synth, validate

RIGHT, LEFT, HIGH = DEFAULT_CAMERAS  # the recipe's order: right wrist, left wrist, high
SIZE = 32
# Three episodes of three frames: (reward_bins, task) and, by hand, argmax (0 for all zeros).
EPISODES = [
    [
        ([0, 0, 1, 0], "fold the towel"),
        ([0, 0, 0, 0], "fold the towel"),
        ([0.1, 0.7, 0.2, 0], "fold the towel"),
    ],
    [
        ([1, 0, 0, 0], "stack the cups"),
        ([0, 0, 0, 1], "stack the cups"),
        ([0, 0.5, 0, 0.5], "stack the cups"),
    ],
    [([0, 0, 0, 0.2], "fold the towel"), ([0, 1, 0, 0], "fold the towel"), ([0, 0, 0, 0], "fold the towel")],
]
LABELS = [2, 0, 1, 0, 3, 1, 3, 1, 0]  # [0, 0.5, 0, 0.5]: the first maximum, as numpy/torch argmax
TASKS = ["fold the towel"] * 3 + ["stack the cups"] * 3 + ["fold the towel"] * 3


def pixel(camera: str, position: int) -> tuple[int, int, int]:
    """Flat colour of a camera in a frame: right wrist red, left wrist green, high blue; brighter each frame."""
    value = 40 + 20 * position
    return {RIGHT: (value, 0, 0), LEFT: (0, value, 0), HIGH: (0, 0, value)}[camera]


def write_dataset(
    root: Path, video: bool = False, episodes: list = EPISODES, reward_shape: tuple[int, ...] = (4,)
) -> Path:
    """A dataset written by lerobot's own LeRobotDataset.create / add_frame / save_episode."""
    camera = {
        "dtype": "video" if video else "image",
        "shape": (SIZE, SIZE, 3),
        "names": ["height", "width", "channels"],
    }
    features = {key: dict(camera) for key in DEFAULT_CAMERAS}
    features["reward_bins"] = {"dtype": "float32", "shape": reward_shape, "names": None}
    dataset = LeRobotDataset.create(
        repo_id="test/aloha", fps=10, features=features, root=root, use_videos=video, video_backend="pyav"
    )
    position = 0
    for frames in episodes:
        for bins, task in frames:
            frame = {key: np.full((SIZE, SIZE, 3), pixel(key, position), np.uint8) for key in DEFAULT_CAMERAS}
            frame["reward_bins"] = np.asarray(bins, dtype=np.float32).reshape(reward_shape)
            frame["task"] = task
            dataset.add_frame(frame)
            position += 1
        if reward_shape == (1,):
            # lerobot 0.4.4 stacks (1,)-shaped values to [N, 1], which its own scalar column rejects;
            # a scalar feature is stored flat, so hand it 0-d values.
            dataset.episode_buffer["reward_bins"] = [
                v.reshape(()) for v in dataset.episode_buffer["reward_bins"]
            ]
        dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    return root


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("lerobot") / "images")


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("lerobot") / "videos", video=True)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lerobot(tmp_path_factory.mktemp("lerobot") / "synthetic")["root"]


@pytest.fixture(scope="module")
def scalar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two frames whose reward_bins is one number (info.json: shape [1])."""
    scalars = [[([0.5], "fold"), ([0.0], "fold")]]
    return write_dataset(tmp_path_factory.mktemp("lerobot") / "scalar", episodes=scalars, reward_shape=(1,))


def frame_dataset(
    root: Path,
    num_classes: int | None = None,
    on_bad_sample: OnBadSample = "raise",
    repo_id: str = DEFAULT_REPO_ID,
) -> SampleDataset[int]:
    """Every frame of a dataset folder that the bad-sample policy keeps, as samples in position order."""
    frames = LeRobotFrames(root, repo_id, DEFAULT_CAMERAS, num_classes)
    return SampleDataset(keep_good(frames.checked(), on_bad_sample), frames.sample)


def colours(sample: Sample) -> list[np.ndarray]:
    return [
        np.asarray(image, dtype=np.int64).reshape(-1, 3).mean(0) for image in vision_items(sample.messages)[0]
    ]


@pytest.mark.parametrize("video", [False, True])
def test_reads_back_labels_tasks_pixels_and_camera_order(
    video: bool, image_root: Path, video_root: Path
) -> None:
    root = video_root if video else image_root
    assert LeRobotFrames(root, repo_id="test/aloha").num_classes == 4
    dataset = frame_dataset(root, repo_id="test/aloha")
    assert len(dataset) == 9
    tolerance = 6 if video else 0  # AV1 (yuv420p) is lossy; parquet images are PNG
    for position in range(9):
        sample = dataset[position]
        assert sample.label == LABELS[position] and sample.target == {"label": LABELS[position]}
        assert sample.answer is None
        episode, frame = divmod(position, 3)
        assert sample.metadata == {
            "episode_index": episode,
            "frame_index": frame,
            "index": position,
            "task": TASKS[position],
        }
        content = sample.messages[0]["content"]
        assert sample.messages[0]["role"] == "user" and len(sample.messages) == 1
        assert [item["type"] for item in content] == ["image", "image", "image", "text"]
        assert content[3] == {"type": "text", "text": f"Task: {TASKS[position]}"}
        assert all(
            isinstance(item["image"], PIL.Image.Image) and item["image"].size == (SIZE, SIZE)
            for item in content[:3]
        )
        for camera, measured in zip(DEFAULT_CAMERAS, colours(sample), strict=True):  # right, left, high
            assert np.abs(measured - pixel(camera, position)).max() <= tolerance, (camera, position, measured)


def test_label_from_reward_bins_by_hand() -> None:
    assert label_from_reward_bins([0, 0, 1, 0]) == 2
    assert label_from_reward_bins(torch.tensor([0.1, 0.7, 0.2])) == 1
    assert label_from_reward_bins(np.zeros(4, np.float32)) == 0  # all zeros: class 0
    assert label_from_reward_bins(0.9) == 0 and label_from_reward_bins(torch.tensor(3.0)) == 0  # scalar
    assert label_from_reward_bins([0, 0.5, 0, 0.5]) == 1  # ties: the first maximum
    assert label_from_reward_bins([-1.0, -0.5]) == 1  # argmax even when all are negative
    with pytest.raises(ValueError, match="NaN"):
        label_from_reward_bins([0.0, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        label_from_reward_bins(np.zeros((2, 2)))
    bins = np.array([[0, 0, 1], [0, 0, 0], [np.inf, 0, 0], [0.3, 0.2, 0.1]])
    assert labels_from_reward_bins(bins).tolist() == [2, 0, -1, 0]
    assert labels_from_reward_bins(np.array([0.0, 1.0])).tolist() == [0, 0]  # [N] scalars


def test_frame_to_pil_follows_the_recipe() -> None:
    chw = torch.zeros(3, 2, 4)
    chw[0] = 1.0  # red, float in [0, 1]
    image = frame_to_pil(chw)
    assert image.size == (4, 2) and image.mode == "RGB" and image.getpixel((0, 0)) == (255, 0, 0)
    video = torch.stack([torch.full((3, 2, 2), 0.5), torch.zeros(3, 2, 2)])  # [T, C, H, W]: first frame
    assert frame_to_pil(video).getpixel((1, 1)) == (128, 128, 128)
    assert frame_to_pil(np.full((3, 2, 2), 7, np.uint8)).getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(ValueError, match="C, H, W"):
        frame_to_pil(np.zeros((2, 2)))


def test_video_frames_decode_from_the_metadata(video_root: Path) -> None:
    info = json.loads((video_root / "meta" / "info.json").read_text())
    assert info["features"][HIGH]["dtype"] == "video"
    mp4 = video_root / info["video_path"].format(video_key=HIGH, chunk_index=0, file_index=0)
    # Episodes share the mp4: frame 1 of episode 1 (position 4) is at 0.3 s + 0.1 s.
    frame = decode_video_frame(mp4, 0.4, fps=10)
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    assert np.abs(frame.reshape(-1, 3).mean(0) - pixel(HIGH, 4)).max() <= 6
    nearest = decode_video_frame(mp4, 0.43, fps=10)  # within half a frame: the nearest frame
    assert np.array_equal(nearest, frame)
    with pytest.raises(VideoDecodeError, match="no frame"):
        decode_video_frame(mp4, 5.0, fps=10)
    with pytest.raises(VideoDecodeError, match="not found"):
        decode_video_frame(video_root / "missing.mp4", 0.0, fps=10)


def test_num_classes_inferred_or_configured(
    image_root: Path, synthetic_root: Path, scalar_root: Path, tmp_path: Path
) -> None:
    assert LeRobotFrames(image_root).num_classes == 4
    assert LeRobotFrames(synthetic_root).num_classes == 4
    assert LeRobotFrames(image_root, num_classes=6).num_classes == 6  # more classes than bins: allowed
    five = write_lerobot(tmp_path / "five", num_episodes=2, frames_per_episode=5, num_classes=5)["root"]
    assert LeRobotFrames(five).num_classes == 5
    dataset = frame_dataset(five)
    assert [dataset[i].label for i in range(5)] == [0, 1, 2, 3, 4]  # a succeeding episode climbs every class
    with pytest.raises(DataError, match=r"scalar.*set data.num_classes") as error:
        LeRobotFrames(scalar_root)
    assert str(error.value.problems[0]).startswith(f"{scalar_root / 'meta' / 'info.json'}:-: reward_bins:")
    assert [s.label for s in frame_dataset(scalar_root, num_classes=2)] == [0, 0]  # scalars: class 0
    with pytest.raises(ValueError, match=r"data\.num_classes=0"):
        LeRobotFrames(image_root, num_classes=0)


def test_num_classes_known_before_setup(image_root: Path, scalar_root: Path, tmp_path: Path) -> None:
    """run.build reads num_classes after prepare_data and before setup: from info.json, no frame read."""
    assert LeRobotRewardDataModule(str(tmp_path / "nothing"), num_classes=6).num_classes == 6  # configured
    assert LeRobotRewardDataModule(str(image_root), num_classes=2).num_classes == 2
    with pytest.raises(ValueError, match=r"data\.num_classes=0"):
        LeRobotRewardDataModule(str(image_root), num_classes=0)
    inferred = LeRobotRewardDataModule(str(tmp_path / "synthetic"), synthesize=True, synth_episodes=2)
    with pytest.raises(DataError, match="LeRobot dataset folder not found"):
        inferred.num_classes  # noqa: B018  (nothing there before prepare_data)
    inferred.prepare_data()
    assert inferred.num_classes == 4
    assert inferred.frames is None and not inferred.datasets  # read from meta/info.json only
    on_disk = LeRobotRewardDataModule(str(image_root), collator=ListCollator())
    assert on_disk.num_classes == 4
    on_disk.setup("fit")
    assert on_disk.num_classes == on_disk.frames.num_classes == 4
    info = scalar_root / "meta" / "info.json"
    with pytest.raises(DataError) as error:
        LeRobotRewardDataModule(str(scalar_root)).num_classes  # noqa: B018
    assert [str(p) for p in error.value.problems] == [
        f"{info}:-: reward_bins: a scalar (shape [1]): cannot infer the number of classes; set data.num_classes"
    ]
    missing = tmp_path / "missing"
    shutil.copytree(image_root, missing)
    pop_feature("reward_bins")(missing)
    with pytest.raises(DataError) as error:
        LeRobotRewardDataModule(str(missing)).num_classes  # noqa: B018
    assert str(error.value.problems[0]).startswith(f"{missing / 'meta' / 'info.json'}:-: reward_bins: ")
    assert "missing" in str(error.value.problems[0])


def edit_info(root: Path, change: Callable[[dict], None]) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def drop_task(root: Path) -> None:
    """meta/tasks.parquet without "stack the cups" (task_index 1 of episode 1: positions 3-5)."""
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    tasks[tasks["task_index"] != 1].to_parquet(root / "meta" / "tasks.parquet")


def pop_feature(key: str) -> Callable[[Path], None]:
    return lambda root: edit_info(root, lambda info: info["features"].pop(key))


def set_info(change: Callable[[dict], None]) -> Callable[[Path], None]:
    return lambda root: edit_info(root, change)


def no_change(root: Path) -> None:
    pass


INFO = "meta/info.json"
TASKS_FILE = "meta/tasks.parquet"
NOT_AN_IMAGE = set_info(lambda info: info["features"][HIGH].update(dtype="float32"))
OLD_VERSION = set_info(lambda info: info.update(codebase_version="v2.1"))
# (id, how to break a copy of the image dataset, num_classes, file (relative; "" = root), row, field, words)
BAD_CASES = [
    ("missing root", shutil.rmtree, None, "", "-", "root", "not found"),
    ("missing info.json", lambda r: (r / INFO).unlink(), None, INFO, "-", "file", "not found"),
    ("broken info.json", lambda r: (r / INFO).write_text('{"features": '), None, INFO, "line 1", "json", ""),
    ("missing camera", pop_feature(LEFT), None, INFO, "-", LEFT, "camera feature missing"),
    ("camera not an image", NOT_AN_IMAGE, None, INFO, "-", HIGH, "not an image"),
    ("missing reward_bins", pop_feature("reward_bins"), None, INFO, "-", "reward_bins", "feature missing"),
    ("old codebase", OLD_VERSION, None, INFO, "-", "codebase_version", "v3"),
    (
        "label >= num_classes",
        no_change,
        3,
        "",
        4,
        "reward_bins",
        "class 3 >= num_classes 3 (episode 1, frame 1",
    ),
    ("task missing", drop_task, None, "", 3, "task", "task_index 1 has no task"),
    ("missing tasks file", lambda r: (r / TASKS_FILE).unlink(), None, TASKS_FILE, "-", "task", "not found"),
]


@pytest.mark.parametrize(
    ("break_it", "num_classes", "file", "row", "field", "words"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_input_names_file_row_and_field(
    break_it: Callable[[Path], None],
    num_classes: int | None,
    file: str,
    row: object,
    field: str,
    words: str,
    image_root: Path,
    tmp_path: Path,
) -> None:
    root = tmp_path / "dataset"
    shutil.copytree(image_root, root)
    break_it(root)
    prefix = f"{root / file if file else root}:{row}: {field}: "
    with pytest.raises(DataError) as error:
        frame_dataset(root, num_classes=num_classes)
    assert any(str(p).startswith(prefix) and words in str(p) for p in error.value.problems), error.value
    assert prefix in str(error.value)
    problems = [str(p) for p in validate_file(root, num_classes=num_classes)]
    assert any(p.startswith(prefix) and words in p for p in problems), problems
    if field == "root":
        assert not root.exists()  # checked before lerobot, which would create the missing folder


def test_video_problems_name_the_mp4(video_root: Path, tmp_path: Path) -> None:
    info = json.loads((video_root / INFO).read_text())
    relative = info["video_path"].format(video_key=LEFT, chunk_index=0, file_index=0)
    missing = tmp_path / "missing"
    shutil.copytree(video_root, missing)
    (missing / relative).unlink()
    with pytest.raises(DataError, match="video file not found") as error:
        frame_dataset(missing)
    assert str(error.value.problems[0]).startswith(f"{missing / relative}:-: {LEFT}: video file not found")
    # A corrupt mp4 passes the cheap check (it exists) but not decoding: validate_file names it and the frame.
    corrupt = tmp_path / "corrupt"
    shutil.copytree(video_root, corrupt)
    (corrupt / relative).write_bytes(b"not an mp4")
    dataset = frame_dataset(corrupt)
    assert validate_file(corrupt, decode=False) == []
    problems = [str(p) for p in validate_file(corrupt)]
    assert len(problems) == 9  # every frame of every episode (positions 0 to 8)
    assert [p.split(": ")[0] for p in problems] == [f"{corrupt / relative}:{pos}" for pos in range(9)]
    assert all(f": {LEFT}: cannot decode" in p for p in problems)
    with pytest.raises(DataError, match=f"{LEFT}: cannot decode"):
        dataset[3]


def test_skip_drops_bad_frames_and_counts_them(image_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        dataset = frame_dataset(image_root, num_classes=3, on_bad_sample="skip")  # class 3 at positions 4, 6
    assert len(dataset) == 7 and f"{image_root}: skipped 2 of 9 rows" in caplog.text
    assert [s.metadata["index"] for s in dataset] == [0, 1, 2, 3, 5, 7, 8]
    dm = LeRobotRewardDataModule(
        str(image_root), num_classes=3, on_bad_sample="skip", val_episodes=[1], test_episodes=[2]
    )
    dm.setup("fit")  # the datamodule applies the same policy before splitting by episode
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [3, 2, 2]
    with pytest.raises(DataError, match="class 3 >= num_classes 3"):
        LeRobotRewardDataModule(str(image_root), num_classes=3).setup("fit")


def test_validate_passes_on_written_and_synthetic_data(
    image_root: Path, video_root: Path, synthetic_root: Path
) -> None:
    for root in (image_root, video_root, synthetic_root):
        assert validate_file(root) == []
    assert validate.main(["lerobot", str(synthetic_root)]) == 0
    assert validate.main(["lerobot", str(synthetic_root / "nope")]) == 1


def test_split_episodes_rules() -> None:
    splits = split_episodes(range(12), val_episodes=0.15, test_episodes=0.15, seed=0)
    assert len(splits["val"]) == len(splits["test"]) == 2  # round(0.15 * 12) = 2
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(12))
    assert splits == split_episodes(range(12), 0.15, 0.15, seed=0)  # deterministic for a seed
    assert splits != split_episodes(range(12), 0.15, 0.15, seed=1)
    assert split_episodes(range(5), [1, 3], [4]) == {"train": [0, 2], "val": [1, 3], "test": [4]}
    assert split_episodes(range(3), None, 0) == {"train": [0, 1, 2], "val": [], "test": []}
    assert len(split_episodes(range(3), 0.01, None)["val"]) == 1  # a positive fraction keeps one episode
    with pytest.raises(ValueError, match="both"):
        split_episodes(range(5), [1], [1])
    with pytest.raises(ValueError, match=r"\[7\] are not in the dataset"):
        split_episodes(range(5), [7], None)
    with pytest.raises(ValueError, match="no episode left for training"):
        split_episodes(range(2), [0], [1])
    with pytest.raises(ValueError, match="a fraction"):
        split_episodes(range(5), 2, None)  # an int count is ambiguous with an episode index


class ListCollator:
    """Stands in for the classification collator: batches stay lists of samples."""

    def train(self, samples: list[Sample]) -> list[Sample]:
        return samples

    eval = train


def test_datamodule_synthesizes_splits_by_episode_and_yields_samples(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    dm = LeRobotRewardDataModule(
        str(root), collator=ListCollator(), batch_size=4, eval_batch_size=8, synthesize=True, synth_episodes=7
    )
    dm.prepare_data()
    assert (root / "meta" / "info.json").is_file()
    assert dm.num_classes == 4  # known before setup (run.build passes it to the classifier)
    dm.setup("fit")
    assert dm.num_classes == 4
    episodes = {
        split: {s.metadata["episode_index"] for s in dm.datasets[split]} for split in ("train", "val", "test")
    }
    assert episodes["train"].isdisjoint(episodes["val"]) and episodes["train"].isdisjoint(episodes["test"])
    assert episodes["val"].isdisjoint(episodes["test"])
    assert episodes["train"] | episodes["val"] | episodes["test"] == set(range(7))
    assert {split: sorted(e) for split, e in episodes.items()} == dm.split_episodes
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [8 * 5, 8, 8]  # round(0.15 * 7) = 1
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 4 and all(isinstance(s, Sample) and s.label in range(4) for s in batch)
    assert len(next(iter(dm.val_dataloader()))) == 8
    assert len(list(dm.test_dataloader())) == 1
    dm.prepare_data()  # a dataset already there is not rewritten
    clone = pickle.loads(pickle.dumps(dm.datasets["val"]))  # DataLoader workers get a copy
    assert clone[0].label == dm.datasets["val"][0].label
    only_train = LeRobotRewardDataModule(
        str(root), val_episodes=[0, 1], test_episodes=None, collator=ListCollator()
    )
    only_train.setup()
    assert only_train.split_episodes["val"] == [0, 1] and "test" not in only_train.datasets
    with pytest.raises(RuntimeError, match=r"data\.test_episodes"):
        only_train.test_dataloader()


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_samples_feed_the_tiny_processor(family: str, synthetic_root: Path, tiny_processors: dict) -> None:
    processor = tiny_processors[family]
    dataset = frame_dataset(synthetic_root)
    samples = [dataset[0], dataset[9]]
    images = []
    for sample in samples:
        found, videos, _ = vision_items(sample.messages)
        assert len(found) == 3 and not videos and all(isinstance(i, PIL.Image.Image) for i in found)
        images += found
    texts = processor.apply_chat_template(
        [s.messages for s in samples], tokenize=False, add_generation_prompt=False
    )
    assert all("Task: fold the towel" in text for text in texts)
    encoded = processor(text=texts, images=images, padding=True, return_tensors="pt")
    assert encoded["image_grid_thw"].shape == (6, 3)
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merged = encoded["image_grid_thw"].prod(-1).sum() // 4  # spatial merge 2 x 2
    assert (encoded["input_ids"] == image_pad).sum() == merged


def test_synthetic_labels_are_drawn_in_cam_high(synthetic_root: Path) -> None:
    dataset = frame_dataset(synthetic_root)
    assert len(dataset) == 12 * 8
    seen = set()
    for sample in dataset:
        high = np.asarray(vision_items(sample.messages)[0][2])  # cam_high is third in the recipe's order
        row = high[48 // 2, :, :].mean(-1)
        filled = int((row > 160).sum())  # bar columns [6, 42): 36 columns, 9 per class
        assert filled == 9 * (sample.label + 1), (sample.id, filled)
        seen.add(sample.label)
        assert sample.metadata["task"].startswith("fold the towel")
    assert seen == {0, 1, 2, 3}
    bins = pd.read_parquet(next((synthetic_root / "data").glob("*/*.parquet")), columns=["reward_bins"])
    assert any(not np.any(b) for b in bins["reward_bins"])  # all-zero bins exercise "class 0"


def test_synthetic_helpers_by_hand() -> None:
    rng = np.random.default_rng(0)
    assert episode_labels(0, 5, 4, rng) == [0, 1, 2, 2, 3]  # even: succeeds, round(3 * t / 4)
    assert episode_labels(2, 1, 4, rng) == [3]
    assert max(episode_labels(1, 8, 4, rng)) < 3  # odd: stalls below the top class
    bar = draw_progress_bar(1, 4, 32, np.random.default_rng(0)).mean(-1)
    assert (bar[16, 4:16] > 160).all() and (
        bar[16, 16:28] < 120
    ).all()  # 4 + 24 * 2 / 4 = 16 and (bar[2] < 60).all()


def test_synthetic_video_and_determinism(tmp_path: Path) -> None:
    kwargs = {"num_episodes": 2, "frames_per_episode": 3, "num_classes": 3, "size": 32}
    a = write_lerobot(tmp_path / "a", seed=3, **kwargs)["root"]
    b = write_lerobot(tmp_path / "b", seed=3, **kwargs)["root"]
    c = write_lerobot(tmp_path / "c", seed=4, **kwargs)["root"]
    video = write_lerobot(tmp_path / "video", seed=3, video=True, **kwargs)["root"]

    def pixels(root: Path) -> list[np.ndarray]:
        return [np.stack([np.asarray(i) for i in vision_items(s.messages)[0]]) for s in frame_dataset(root)]

    pa, pb, pc, pv = (pixels(root) for root in (a, b, c, video))
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(pa, pc, strict=True))
    assert json.loads((video / INFO).read_text())["features"][HIGH]["dtype"] == "video"
    assert [s.label for s in frame_dataset(video)] == [s.label for s in frame_dataset(a)]
    for x, y, sample in zip(pa, pv, frame_dataset(video), strict=True):
        assert np.abs(x.astype(int) - y).mean() < 8  # lossy AV1 smooths the noise (std 4) away
        filled = int((y[2, 16].mean(-1) > 160).sum())  # cam_high's bar: [4, 28), 8 columns a class
        assert abs(filled - 8 * (sample.label + 1)) <= 1, (sample.id, filled)  # the label survives the codec
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_lerobot(empty, **kwargs)["root"] == empty  # an empty folder is fine
    with pytest.raises(FileExistsError, match="not empty"):
        write_lerobot(a, **kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        write_lerobot(tmp_path / "one", num_classes=1)


def test_synth_cli_and_hydra_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synth.main(["lerobot", str(out), "--num-episodes", "2", "--frames-per-episode", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"root: {out}"
    assert len(frame_dataset(out)) == 4
    cfg = compose_config("train", ["data=lerobot", "preset=tiny", "data.synth_episodes=4"], tmp_path)
    dm = instantiate(cfg.data, collator=ListCollator())
    assert isinstance(dm, LeRobotRewardDataModule)
    assert dm.cameras == DEFAULT_CAMERAS and dm.synthesize and dm.batch_size == 4
    assert Path(dm.root) == tmp_path / "data" / "synthetic" / "lerobot"
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 4 and len(dm.datasets["train"]) == 8 * 2  # 4 episodes: 1 val, 1 test


def test_predict_dataloader_yields_chosen_episodes_in_frame_order(synthetic_root: Path) -> None:
    dm = LeRobotRewardDataModule(
        str(synthetic_root), collator=ListCollator(), eval_batch_size=5, predict_episodes=[7, 2]
    )
    dm.setup("predict")
    frames = [
        (s.metadata["episode_index"], s.metadata["frame_index"]) for b in dm.predict_dataloader() for s in b
    ]
    assert frames == [(e, f) for e in (2, 7) for f in range(8)]  # every frame, episode by episode, in order
    default = LeRobotRewardDataModule(str(synthetic_root), collator=ListCollator(), eval_batch_size=64)
    default.setup("predict")
    (batch,) = default.predict_dataloader()  # none chosen: the test episodes
    assert sorted({s.metadata["episode_index"] for s in batch}) == default.split_episodes["test"]
    bucketed = LeRobotRewardDataModule(
        str(synthetic_root),
        collator=ListCollator(),
        test_episodes=None,
        duration_batching={"target_batch_duration": 6.0, "max_batch_size": 4},  # 3 cameras a frame: 2 frames
    )
    bucketed.setup("fit")
    assert {len(b) for b in bucketed.train_dataloader()} == {2}
    with pytest.raises(RuntimeError, match=r"data\.predict_episodes"):
        bucketed.predict_dataloader()
    unknown = LeRobotRewardDataModule(str(synthetic_root), collator=ListCollator(), predict_episodes=[3, 12])
    with pytest.raises(ValueError, match=r"data\.predict_episodes: episodes \[12\]"):
        unknown.setup("predict")
