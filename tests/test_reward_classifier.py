"""The pooled-token reward classifier (the robot reward recipe): pooling, head, fit, checkpoint, HF export, predict."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import Qwen3VLConfig

from tests.helpers import run_script
from tests.test_data_lerobot import frame_dataset as LeRobotRewardDataset
from vlmlab.callbacks.episode_rewards import EpisodeRewardWriter, episodes_of, reward_figure
from vlmlab.data.collate import ClassificationCollator
from vlmlab.data.lerobot import LeRobotRewardDataModule
from vlmlab.data.synthetic.lerobot import write as write_lerobot
from vlmlab.metrics.classification import ClassificationMetrics, confusion_matrix_figure
from vlmlab.models.backbone import BackboneSpec
from vlmlab.models.lora import LoRASettings
from vlmlab.models.tiny import tiny_config
from vlmlab.modules.optim import OptimSettings
from vlmlab.modules.reward_classifier import (
    RewardClassifierModule,
    classify,
    expected_reward,
    hidden_size_of,
    last_token_index,
    load_reward_classifier,
    pool_last_token,
)

EPISODES, FRAMES = 5, 4


@pytest.fixture(scope="module")
def lerobot_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 episodes x 4 frames, 4 classes, 32 px cameras (val: episode 1, test: episode 2)."""
    return write_lerobot(
        tmp_path_factory.mktemp("reward") / "lerobot",
        num_episodes=EPISODES,
        frames_per_episode=FRAMES,
        size=32,
    )["root"]


def make_module(
    processor: object, lora: bool = True, num_classes: int | None = None, **kwargs: object
) -> RewardClassifierModule:
    spec = BackboneSpec(
        family="qwen3_vl",
        tiny=True,
        dtype="float32",
        min_pixels=784,
        max_pixels=3136,
        lora=LoRASettings(r=4, alpha=8, dropout=0.0) if lora else None,
    )
    return RewardClassifierModule(
        spec, OptimSettings(lr=1e-2, warmup_ratio=0.0), num_classes=num_classes, processor=processor, **kwargs
    )


def make_data(root: Path, processor: object, **kwargs: object) -> LeRobotRewardDataModule:
    return LeRobotRewardDataModule(
        str(root),
        val_episodes=[1],
        test_episodes=[2],
        collator=ClassificationCollator(processor),
        batch_size=2,
        eval_batch_size=4,
        **kwargs,
    )


def trainer(tmp_path: Path, **kwargs: object) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        gradient_clip_val=1.0,
    )
    return pl.Trainer(**{**defaults, **kwargs})


# ---------------------------------------------------------------------------------------------- pooling


def test_last_token_index_for_right_left_and_holed_masks() -> None:
    mask = torch.tensor(
        [
            [1, 1, 1, 0, 0],  # right padding: sum - 1 = 2
            [
                0,
                0,
                1,
                1,
                1,
            ],  # left padding: the last column, 4 (the robot reward recipe's sum - 1 would say 2)
            [1, 1, 1, 1, 1],  # no padding: 4
            [1, 0, 1, 1, 0],  # a hole (e.g. a masked token): the last real one, 3
            [0, 1, 0, 0, 0],  # a single real token: 1
        ]
    )
    assert last_token_index(mask).tolist() == [2, 4, 4, 3, 1]
    assert last_token_index(mask.bool()).tolist() == [2, 4, 4, 3, 1]
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        last_token_index(torch.ones(3))


def test_pool_last_token_picks_those_states() -> None:
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(
        2, 4, 3
    )  # hidden[b, j] = 12 b + 3 j + (0..2)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    pooled = pool_last_token(hidden, mask)
    assert pooled.tolist() == [[3.0, 4.0, 5.0], [21.0, 22.0, 23.0]]  # (b 0, j 1) and (b 1, j 3)
    with pytest.raises(ValueError, match="differ"):
        pool_last_token(hidden, mask[:, :3])


def test_hidden_size_and_expected_reward_by_hand() -> None:
    assert hidden_size_of(tiny_config("qwen3_vl")) == 64  # text_config.hidden_size
    assert hidden_size_of(Qwen3VLConfig(text_config={"hidden_size": 2048})) == 2048
    assert hidden_size_of(SimpleNamespace(hidden_size=96)) == 96  # a text-only config
    with pytest.raises(ValueError, match="hidden_size"):
        hidden_size_of(SimpleNamespace())
    probabilities = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0.25, 0.25, 0.25, 0.25], [0, 0.5, 0.5, 0]])
    # sum_c p_c * c / 3: 0, 1, (0 + 1 + 2 + 3) / 12 = 0.5, (1 + 2) / 6 = 0.5
    assert torch.allclose(expected_reward(probabilities), torch.tensor([0.0, 1.0, 0.5, 0.5]))
    assert expected_reward(torch.ones(2, 1)).tolist() == [0.0, 0.0]


def test_classification_metrics_by_hand() -> None:
    metrics = ClassificationMetrics(3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    metrics.update(preds[:3], labels[:3])
    metrics.update(torch.nn.functional.one_hot(preds[3:], 3).float(), labels[3:])  # logits: argmax
    scores = metrics.compute()
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # per class (tp, fp, fn) -> F1 = 2tp / (2tp + fp + fn): 0: (1,1,1) 1/2; 1: (2,1,0) 4/5; 2: (1,0,1) 2/3
    assert scores["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert metrics.confusion_matrix().tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    metrics.reset()
    metrics.update(torch.tensor([1, 1]), torch.tensor([1, 1]))  # classes never seen do not count in macro-F1
    assert metrics.compute() == {"accuracy": 1.0, "f1_macro": 1.0}
    figure = confusion_matrix_figure(torch.tensor([[3, 1], [0, 4]]), ["fail", "success"])
    assert isinstance(figure, matplotlib.figure.Figure)
    with pytest.raises(ValueError, match="3 class names"):
        confusion_matrix_figure(torch.eye(2), ["a", "b", "c"])


# ---------------------------------------------------------------------------------------- tiny model


def test_head_size_comes_from_the_backbone_config(tiny_processors: dict) -> None:
    module = make_module(tiny_processors["qwen3_vl"], lora=False, num_classes=5, class_names=list("abcde"))
    assert module.head.in_features == tiny_config("qwen3_vl").text_config.hidden_size == 64
    assert module.head.out_features == 5 and module.class_names == list("abcde")
    assert not module.model.lm_head.weight.requires_grad  # untied and never run: kept out of the optimizer
    # The head size is configuration, known when the module is built (vlmlab.run.build passes the
    # data's when the config leaves it null): never inferred later.
    with pytest.raises(ValueError, match=r"task\.module\.num_classes=None"):
        make_module(tiny_processors["qwen3_vl"])
    with pytest.raises(ValueError, match="2 names for 3 classes"):
        make_module(tiny_processors["qwen3_vl"], num_classes=3, class_names=["a", "b"])


def test_logits_do_not_depend_on_the_padding_side(lerobot_root: Path, tiny_processors: dict) -> None:
    processor = tiny_processors["qwen3_vl"]
    module = make_module(processor, lora=False, num_classes=4).eval()
    dataset = LeRobotRewardDataset(lerobot_root)
    first_of_task = {}
    for i in range(0, len(dataset), FRAMES):
        first_of_task.setdefault(dataset[i].metadata["task"], dataset[i])
    assert len(first_of_task) >= 2, first_of_task  # two prompts of different lengths: one of them is padded
    samples = list(first_of_task.values())[:2]
    right = ClassificationCollator(processor, padding_side="right").train(samples)
    left = ClassificationCollator(processor, padding_side="left").train(samples)
    lengths = right.inputs["attention_mask"].sum(1)
    assert lengths[0] != lengths[1]
    assert right.inputs["attention_mask"][:, 0].all() and left.inputs["attention_mask"][:, -1].all()
    with torch.no_grad():
        logits_right, logits_left = module(right.inputs), module(left.inputs)
        alone = torch.cat([module(ClassificationCollator(processor).train([s]).inputs) for s in samples])
    torch.testing.assert_close(logits_left, logits_right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_right, alone, atol=1e-5, rtol=1e-5)  # padding changes nothing


def test_non_finite_loss_is_never_applied(lerobot_root: Path, tiny_processors: dict) -> None:
    processor = tiny_processors["qwen3_vl"]
    module = make_module(processor, lora=False, num_classes=4)
    batch = ClassificationCollator(processor).train([LeRobotRewardDataset(lerobot_root)[0]])
    module.forward = lambda inputs: torch.full((1, 4), float("nan"))
    assert module.training_step(batch, 0) is None  # Lightning skips backward and the optimizer step


@pytest.mark.slow
def test_short_fit_changes_trainable_weights_only_and_checkpoints_them(
    lerobot_root: Path, tiny_processors: dict, tmp_path: Path
) -> None:
    processor = tiny_processors["qwen3_vl"]
    module = make_module(processor, num_classes=4)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    fit = trainer(tmp_path, logger=logger, val_check_interval=3, limit_val_batches=1)
    fit.fit(module, datamodule=make_data(lerobot_root, processor))
    assert module.num_classes == 4 and module.head.out_features == 4
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    changed = {n for n, p in module.model.named_parameters() if not torch.equal(before[n], p)}
    assert not (changed - trainable), f"frozen weights changed: {sorted(changed - trainable)[:3]}"
    assert {n for n in trainable if "lora_B" in n} <= changed, "every LoRA B must move away from zero"
    for key in ("train/loss", "val/loss", "val/classify/accuracy", "val/classify/f1_macro"):
        assert key in fit.callback_metrics
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "val/classify/confusion_matrix" in events.Tags()["images"]

    path = tmp_path / "final.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # hyper-parameters are plain data
    saved = set(checkpoint["state_dict"])
    assert {"head.weight", "head.bias"} <= saved and all(
        "lora_" in k for k in saved - {"head.weight", "head.bias"}
    )
    assert checkpoint["hyper_parameters"]["num_classes"] == 4
    batch = ClassificationCollator(processor).train([LeRobotRewardDataset(lerobot_root)[5]])
    with torch.no_grad():
        expected = module.eval()(batch.inputs)
        fresh = make_module(processor, num_classes=4)
        fresh.on_load_checkpoint(checkpoint)
        fresh.load_state_dict(checkpoint["state_dict"], strict=False)
        assert torch.equal(fresh.eval()(batch.inputs), expected)
        # Lightning's own reload: the plain-dict hyper-parameters rebuild the spec and the head.
        loaded = RewardClassifierModule.load_from_checkpoint(path, processor=processor, weights_only=True)
        assert loaded.backbone == module.backbone and loaded.num_classes == 4
        assert torch.equal(loaded.eval()(batch.inputs), expected)
    with pytest.raises(ValueError, match="checkpoint head has 4 classes, this module 3"):
        make_module(processor, num_classes=3).on_load_checkpoint(checkpoint)
    with pytest.raises(KeyError, match="lacks"):
        make_module(processor, lora=False, num_classes=4).on_load_checkpoint(checkpoint)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_export_reloads_with_transformers_peft_and_torch_alone(
    lora: bool, lerobot_root: Path, tiny_processors: dict, tmp_path: Path
) -> None:
    processor = tiny_processors["qwen3_vl"]
    module = make_module(processor, lora=lora, num_classes=4, class_names=["none", "low", "high", "done"])
    data = make_data(lerobot_root, processor)
    trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(module, datamodule=data)
    out = module.export_hf(tmp_path / "hf")
    config = json.loads((out / "head_config.json").read_text())
    assert config == {
        "num_classes": 4,
        "hidden_size": 64,
        "class_names": ["none", "low", "high", "done"],
        "pooling": "last_non_padding_token",
        "family": "qwen3_vl",
        "lora": lora,
    }
    assert (out / "head.safetensors").is_file() and (out / "processor_config.json").is_file()
    assert (out / "adapter_config.json").is_file() == lora

    model, reloaded_processor, head = load_reward_classifier(out)
    assert not model.training and head.weight.shape == (4, 64)
    samples = [data.datasets["val"][0], data.datasets["val"][3]]
    batch = ClassificationCollator(reloaded_processor).train(samples)
    with torch.no_grad():
        assert torch.equal(classify(model, head, batch.inputs), module.eval()(batch.inputs))
    with pytest.raises(FileNotFoundError, match=r"head_config\.json"):
        load_reward_classifier(tmp_path)


@pytest.mark.slow
def test_predict_writes_per_episode_rewards_and_plots(
    lerobot_root: Path, tiny_processors: dict, tmp_path: Path
) -> None:
    processor = tiny_processors["qwen3_vl"]
    module = make_module(processor, lora=False, num_classes=4)
    data = make_data(lerobot_root, processor, predict_episodes=[3, 0])
    writer = EpisodeRewardWriter(tmp_path / "rewards")
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    predictor = trainer(tmp_path, logger=logger, callbacks=[writer])
    batches = predictor.predict(module, datamodule=data)
    records = [r for batch in batches for r in batch]
    assert [(r["episode_index"], r["frame_index"]) for r in records] == [
        (e, f) for e in (0, 3) for f in range(FRAMES)
    ]  # every frame of the chosen episodes, in frame order
    assert sorted(p.name for p in writer.written) == [
        "episode_000000.jsonl",
        "episode_000000.png",
        "episode_000003.jsonl",
        "episode_000003.png",
    ]
    rows = [
        json.loads(line) for line in (tmp_path / "rewards" / "episode_000003.jsonl").read_text().splitlines()
    ]
    assert [r["frame_index"] for r in rows] == list(range(FRAMES))
    labels = [s.label for s in LeRobotRewardDataset(lerobot_root) if s.metadata["episode_index"] == 3]
    for row, label in zip(rows, labels, strict=True):
        p = row["probabilities"]
        assert len(p) == 4 and sum(p) == pytest.approx(1.0, abs=1e-5)
        assert row["predicted"] == max(range(4), key=p.__getitem__)
        assert row["expected_reward"] == pytest.approx(sum(c * p[c] for c in range(4)) / 3, abs=1e-6)
        assert row["label"] == label and row["id"] == f"episode_000003_frame_{row['frame_index']:06d}"
    png = (tmp_path / "rewards" / "episode_000003.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"predict/episode_000000", "predict/episode_000003"} <= set(events.Tags()["images"])


def test_episode_grouping_and_figure_by_hand(tmp_path: Path) -> None:
    def record(episode: int, frame: int, p: list[float]) -> dict:
        return {
            "episode_index": episode,
            "frame_index": frame,
            "probabilities": p,
            "expected_reward": float(expected_reward(torch.tensor(p))),
            "label": None,
        }

    # Out of order and with a repeat, as a distributed sampler may deliver them.
    records = [record(2, 1, [0, 1]), record(0, 0, [1, 0]), record(2, 0, [0.5, 0.5]), record(2, 1, [0, 1])]
    grouped = episodes_of(records)
    assert list(grouped) == [0, 2] and [r["frame_index"] for r in grouped[2]] == [0, 1]
    assert [r["expected_reward"] for r in grouped[2]] == [0.5, 1.0]
    assert isinstance(reward_figure(grouped[2], ["fail", "success"], 2), matplotlib.figure.Figure)
    written = EpisodeRewardWriter(tmp_path).write(records)
    assert [p.name for p in written] == [
        "episode_000000.jsonl",
        "episode_000000.png",
        "episode_000002.jsonl",
        "episode_000002.png",
    ]
    assert len((tmp_path / "episode_000002.jsonl").read_text().splitlines()) == 2


def test_predict_episodes_must_exist(lerobot_root: Path, tiny_processors: dict) -> None:
    data = make_data(lerobot_root, tiny_processors["qwen3_vl"], predict_episodes=[1, 42])
    with pytest.raises(ValueError, match=r"data.predict_episodes: episodes \[42\]"):
        data.setup("predict")


# -------------------------------------------------------------------------------------- the demo command


@pytest.mark.slow
def test_aloha_reward_tiny_reaches_90_percent_validation_accuracy(tmp_path: Path) -> None:
    """`python train.py experiment=aloha_reward preset=tiny`: >= 90% validation accuracy within 5 minutes."""
    args = [
        "train.py",
        "experiment=aloha_reward",
        "preset=tiny",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    run_script(args, timeout=900)
    (run_dir,) = (tmp_path / "logs" / "aloha_reward" / "runs").iterdir()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    accuracy = [e.value for e in events.Scalars("val/classify/accuracy")]
    assert accuracy and accuracy[-1] >= 0.9, accuracy
    assert "val/classify/confusion_matrix" in events.Tags()["images"]
    hf = run_dir / "checkpoints" / "hf"
    assert (hf / "head.safetensors").is_file() and (hf / "head_config.json").is_file()

    # evaluate.py predict=true: per-frame class probabilities and a reward curve per episode.
    predict = [
        "evaluate.py",
        "experiment=aloha_reward",
        "preset=tiny",
        "predict=true",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    run_script(predict, timeout=600)
    curves = list((tmp_path / "logs" / "aloha_reward").glob("runs/*/episode_rewards/episode_*"))
    assert {p.suffix for p in curves} == {".jsonl", ".png"}
