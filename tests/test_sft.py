"""SFT on the tiny models: a short fit per family, what changes, checkpoint and HF reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmlab.data.collate import SFTCollator
from vlmlab.data.ct_report import CTReportDataModule
from vlmlab.data.synthetic.ct_report import write as write_ct_report
from vlmlab.data.volume import VolumeFrames
from vlmlab.metrics.report import ReportMetrics
from vlmlab.models.backbone import BackboneSpec
from vlmlab.models.lora import LoRASettings
from vlmlab.modules.generation import GenerationSettings
from vlmlab.modules.optim import OptimSettings
from vlmlab.modules.sft import SFTModule

FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ct_report")
    write_ct_report(root, num_train=8, num_val=2, num_test=2, slices=16, size=48)
    return root


def make_module(family: str, lora: bool = True) -> SFTModule:
    spec = BackboneSpec(
        family=family,
        tiny=True,
        dtype="float32",
        min_pixels=784,
        max_pixels=3136,
        lora=LoRASettings(r=4, alpha=8, dropout=0.0) if lora else None,
    )
    return SFTModule(
        spec,
        OptimSettings(lr=1e-2, warmup_ratio=0.0),
        GenerationSettings(max_new_tokens=4),
        metrics=ReportMetrics(),
    )


def make_data(root: Path, module: SFTModule) -> CTReportDataModule:
    return CTReportDataModule(
        frames=VolumeFrames(num_frames=8, size=(56, 56)),
        root=str(root),
        collator=SFTCollator(module.processor),
        batch_size=2,
        eval_batch_size=2,
    )


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        limit_val_batches=1,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def snapshot(module: SFTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_short_fit_changes_trainable_and_only_trainable_weights(
    family: str, ct_data: Path, tmp_path: Path
) -> None:
    module = make_module(family)
    before = snapshot(module)
    fit = trainer(tmp_path, enable_checkpointing=False, val_check_interval=3)
    fit.fit(module, datamodule=make_data(ct_data, module))
    after = snapshot(module)
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert not (changed - trainable), f"frozen weights changed: {sorted(changed - trainable)[:3]}"
    assert {n for n in trainable if "lora_B" in n} <= changed, "every LoRA B must move away from zero"
    for key in ("val/loss", "val/report/rouge_l", "val/report/bleu_4"):
        assert key in fit.callback_metrics


@pytest.mark.slow
def test_checkpoint_reloads_to_identical_logits_and_holds_only_trainable_weights(
    ct_data: Path, tmp_path: Path
) -> None:
    module = make_module("qwen2_5_vl")
    data = make_data(ct_data, module)
    fit = trainer(tmp_path, enable_checkpointing=True, max_steps=2, limit_val_batches=0)
    fit.fit(module, datamodule=data)
    path = tmp_path / "final.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert saved and all("lora_" in k for k in saved)

    batch = data.collator.train([data.datasets["train"][0]])
    module.eval()
    with torch.no_grad():
        expected = module(batch.inputs).logits
        fresh = make_module("qwen2_5_vl")
        fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=False)
        fresh.on_load_checkpoint(torch.load(path, weights_only=True))
        fresh.eval()
        assert torch.equal(fresh(batch.inputs).logits, expected)

    # A checkpoint of another LoRA config is refused with a clear message.
    other = SFTModule(
        BackboneSpec(
            family="qwen2_5_vl",
            tiny=True,
            dtype="float32",
            lora=LoRASettings(r=4, target_modules=["gate_proj"]),
        ),
        OptimSettings(),
        GenerationSettings(),
    )
    with pytest.raises(KeyError, match="lacks"):
        other.on_load_checkpoint(torch.load(path, weights_only=True))


@pytest.mark.slow
def test_hf_export_loads_with_transformers_and_peft_alone(ct_data: Path, tmp_path: Path) -> None:
    module = make_module("qwen3_vl")
    data = make_data(ct_data, module)
    trainer(tmp_path, enable_checkpointing=False, max_steps=2, limit_val_batches=0).fit(
        module, datamodule=data
    )
    out = module.export_hf(tmp_path / "hf")
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4

    base = AutoModelForImageTextToText.from_pretrained(out / "base", local_files_only=True)
    reloaded = PeftModel.from_pretrained(base, out, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    batch = SFTCollator(processor).train([data.datasets["train"][0]])
    module.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch.inputs).logits, module(batch.inputs).logits)


def test_non_finite_loss_is_never_applied(
    ct_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = make_module("qwen2_5_vl", lora=False)
    data = make_data(ct_data, module)
    data.setup("fit")
    batch = data.collator.train([data.datasets["train"][0]])
    monkeypatch.setattr("vlmlab.modules.sft.assistant_token_loss", lambda *_: torch.tensor(float("nan")))
    assert module.training_step(batch, 0) is None  # Lightning skips backward and the step


@pytest.mark.slow
def test_init_from_starts_a_new_run_from_a_checkpoint(ct_data: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    module = make_module("qwen2_5_vl")
    fit = trainer(tmp_path, enable_checkpointing=False, max_steps=2, limit_val_batches=0)
    fit.fit(module, datamodule=make_data(ct_data, module))
    path = tmp_path / "sft.ckpt"
    fit.save_checkpoint(path)
    started = replace(module.backbone, init_from=str(path)).load_model()
    trained = dict(module.model.named_parameters())
    for name, parameter in started.named_parameters():
        assert torch.equal(parameter, trained[name]), name
    other = replace(
        module.backbone, lora=LoRASettings(r=4, target_modules=["gate_proj"]), init_from=str(path)
    )
    with pytest.raises(KeyError, match="same model config"):
        other.load_model()


@pytest.mark.parametrize("lora", [False, True])
def test_assistant_token_loss_equals_the_hugging_face_loss(lora: bool, ct_data: Path) -> None:
    from vlmlab.modules.sft import assistant_token_loss

    module = make_module("qwen3_vl", lora=lora)
    data = make_data(ct_data, module)
    data.setup("fit")
    batch = data.collator.train([data.datasets["train"][i] for i in range(3)])
    with torch.no_grad():
        expected = module.model(**batch.inputs, labels=batch.labels).loss
        assert torch.allclose(
            assistant_token_loss(module.model, batch.inputs, batch.labels), expected, atol=1e-5
        )
