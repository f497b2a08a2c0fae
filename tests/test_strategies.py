"""conf/strategy: every strategy composes with every experiment into the right Lightning strategy, the
DeepSpeed settings written in YAML reach DeepSpeed, GRPO generation is synced under ZeRO-3, and the
Hugging Face export gathers ZeRO-3 sharded weights.

DeepSpeed itself refuses to *run* under Lightning without CUDA (``setup_environment``); everything up
to that point (strategy, Trainer, DeepSpeed's config validation, a ZeRO-3 engine on DeepSpeed's CPU
accelerator) is tested here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy

from tests.helpers import CONF, compose_config
from vlmlab.callbacks.hf_export import HuggingFaceExport, gathered_parameters, shards_parameters
from vlmlab.compat.lightning import generation_sync_kwargs

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
STRATEGIES = sorted(p.stem for p in (CONF / "strategy").glob("*.yaml"))
DEEPSPEED = ["deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"]
# strategy: (Lightning type, ZeRO stage, optimizer offload, parameter offload)
EXPECTED: dict[str, tuple[type | str, int | None, bool, bool]] = {
    "auto": ("auto", None, False, False),
    "ddp": (DDPStrategy, None, False, False),
    "deepspeed_zero2": (DeepSpeedStrategy, 2, False, False),
    "deepspeed_zero3": (DeepSpeedStrategy, 3, False, False),
    "deepspeed_zero3_offload": (DeepSpeedStrategy, 3, True, True),
}


def strategy_of(name: str, experiment: str = "mcqa_grpo") -> object:
    """The instantiated ``trainer.strategy`` of ``experiment`` with ``strategy=name`` (not "auto")."""
    cfg = compose_config("train", [f"experiment={experiment}", f"strategy={name}"])
    return instantiate(cfg.trainer.strategy)


def test_the_strategy_group_holds_the_five_documented_strategies() -> None:
    assert sorted(EXPECTED) == STRATEGIES
    assert len(EXPERIMENTS) >= 8


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_strategy_composes_with_every_experiment_into_a_trainer(
    experiment: str, strategy: str, tmp_path: Path
) -> None:
    cfg = compose_config(
        "train", [f"experiment={experiment}", f"strategy={strategy}", "trainer.accelerator=cpu"], tmp_path
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    kind, stage, _, _ = EXPECTED[strategy]
    if kind == "auto":
        assert cfg.trainer.strategy == "auto"
        assert type(trainer.strategy).__name__ == "SingleDeviceStrategy"  # devices=1
    else:
        assert type(trainer.strategy) is kind
    assert trainer.precision == cfg.trainer.precision  # the strategy leaves precision to the trainer
    assert generation_sync_kwargs(trainer.strategy) == ({"synced_gpus": True} if stage == 3 else {})
    assert shards_parameters(trainer.strategy) is (stage == 3)


@pytest.mark.parametrize("name", DEEPSPEED)
def test_deepspeed_yaml_settings_reach_the_strategy(name: str) -> None:
    _, stage, offload_optimizer, offload_params = EXPECTED[name]
    strategy = strategy_of(name)
    assert isinstance(strategy, DeepSpeedStrategy)
    config = strategy.config
    assert type(config) is dict  # _convert_: all; Lightning asserts a plain dict
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    assert ("offload_optimizer" in zero) is offload_optimizer
    assert ("offload_param" in zero) is offload_params
    if offload_optimizer:
        assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
        assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
        # Else DeepSpeed refuses our torch AdamW under offload (ZeRORuntimeException).
        assert config["zero_force_ds_cpu_optimizer"] is False
    assert config["zero_allow_untested_optimizer"] is True
    # Set, so Lightning never reads batch_sampler.batch_size (the duration sampler has none).
    assert config["train_micro_batch_size_per_gpu"] == 1
    # Checkpoints keep only the trainable weights, like TrainableWeightsCheckpoint's .ckpt files.
    assert strategy.exclude_frozen_parameters is True
    # These come from the trainer; DeepSpeed must not get a second, conflicting source.
    for key in ("gradient_accumulation_steps", "gradient_clipping", "bf16", "fp16"):
        assert key not in config


@pytest.mark.parametrize("name", DEEPSPEED)
def test_deepspeed_accepts_the_config_lightning_hands_it(name: str, tmp_path: Path) -> None:
    """What Lightning adds at setup (precision, accumulation, clipping), then DeepSpeed's own parser."""
    from deepspeed.runtime.config import DeepSpeedConfig

    cfg = compose_config(
        "train", ["experiment=mcqa_grpo", f"strategy={name}", "trainer.accelerator=cpu"], tmp_path
    )
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    strategy = trainer.strategy
    strategy._format_config()  # precision part only: no LightningModule attached yet
    config = copy.deepcopy(strategy.config)
    assert config["bf16"] == {"enabled": True}  # from trainer.precision=bf16-mixed
    config.update(gradient_accumulation_steps=cfg.trainer.accumulate_grad_batches, gradient_clipping=1.0)
    parsed = DeepSpeedConfig(config)
    _, stage, offload_optimizer, offload_params = EXPECTED[name]
    assert parsed.zero_optimization_stage == stage
    assert parsed.bfloat16_config.enabled
    zero = parsed.zero_config
    assert (zero.offload_optimizer is not None) is offload_optimizer
    assert (zero.offload_param is not None) is offload_params
    assert zero.reduce_bucket_size == config["zero_optimization"]["reduce_bucket_size"]
    if stage == 3:
        assert zero.prefetch_bucket_size == config["zero_optimization"]["stage3_prefetch_bucket_size"]
        assert (
            zero.param_persistence_threshold
            == config["zero_optimization"]["stage3_param_persistence_threshold"]
        )


class TinyExport(pl.LightningModule):
    """Two layers, one frozen; ``export_hf`` saves the state_dict it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(4, 3)
        self.head = torch.nn.Linear(3, 2)
        self.frozen.requires_grad_(False)

    def export_hf(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.clone() for k, v in self.state_dict().items()}, out / "weights.pt")
        return out


@pytest.mark.slow
def test_hf_export_gathers_zero3_sharded_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real ZeRO-3 engine on DeepSpeed's CPU accelerator (one gloo process): outside the gather each
    weight is an empty placeholder; the export writes the full, unchanged weights."""
    deepspeed = pytest.importorskip("deepspeed")
    # DeepSpeed would JIT-compile its optional shared-memory all-reduce for CPU (about a minute).
    monkeypatch.setitem(deepspeed.ops.__compatible_ops__, "deepspeed_shm_comm", False)
    monkeypatch.setenv("LOCAL_RANK", "0")  # deepspeed.initialize asserts a launcher set it
    torch.manual_seed(0)
    module = TinyExport()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        trainable = [p for p in module.parameters() if p.requires_grad]
        deepspeed.initialize(
            model=module,
            model_parameters=trainable,
            optimizer=torch.optim.AdamW(trainable, lr=1e-3),
            config={
                "train_micro_batch_size_per_gpu": 1,
                "zero_allow_untested_optimizer": True,
                "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
            },
            dist_init_required=False,
        )
        assert all(p.numel() == 0 for p in module.parameters())  # sharded: placeholders only

        strategy = SimpleNamespace(zero_stage_3=True)
        assert shards_parameters(strategy)
        trainer = SimpleNamespace(
            strategy=strategy, is_global_zero=True, checkpoint_callback=None, default_root_dir=str(tmp_path)
        )
        HuggingFaceExport(dirname="hf").on_train_end(trainer, module)  # type: ignore[arg-type]
        assert all(p.numel() == 0 for p in module.parameters())  # re-partitioned after the export
    finally:
        dist.destroy_process_group()
    saved = torch.load(tmp_path / "hf" / "weights.pt")
    assert set(saved) == set(before)
    for key, value in before.items():
        torch.testing.assert_close(saved[key], value)


def test_gathered_parameters_is_a_no_op_without_zero3() -> None:
    module = TinyExport()
    with gathered_parameters(module, enabled=False):
        assert module.head.weight.shape == (2, 3)


def test_hf_export_writes_on_rank_zero_only(tmp_path: Path) -> None:
    module = TinyExport()
    for rank_zero in (False, True):
        trainer = SimpleNamespace(
            strategy=SimpleNamespace(),
            is_global_zero=rank_zero,
            checkpoint_callback=None,
            default_root_dir=str(tmp_path),
        )
        HuggingFaceExport(dirname="hf").on_train_end(trainer, module)  # type: ignore[arg-type]
        assert (tmp_path / "hf" / "weights.pt").is_file() is rank_zero
