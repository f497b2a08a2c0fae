"""Reward classification (the robot reward recipe): the backbone's hidden state at the last non-padding token, a linear
head, cross-entropy.

The pooled state is the final (normed) hidden state of the language model, taken from the backbone's
inner ``Qwen*VLModel`` (``model.model``): the 151k-vocabulary ``lm_head`` is never run, which saves
a ``[B, L, 151936]`` logits tensor per step and is the same state as ``output_hidden_states=True``'s
last entry after the final norm. Logits are ``head(pool_last_token(hidden, attention_mask))``
(:func:`classify`), with the same code in training and after :func:`load_reward_classifier`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from pytorch_lightning.loggers import TensorBoardLogger
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)

from vlmlab.data.collate import VisionLanguageBatch
from vlmlab.metrics.classification import ClassificationMetrics, confusion_matrix_figure
from vlmlab.models.backbone import BackboneSpec, count_parameters, last_hidden_state
from vlmlab.models.lora import LoRASettings
from vlmlab.modules.common import (
    TrainableWeightsCheckpoint,
    export_backbone,
    skip_nonfinite_loss,
    write_predictions,
)
from vlmlab.modules.optim import OptimSettings, configure_adamw
from vlmlab.tasks.robot_reward import expected_reward

log = logging.getLogger(__name__)

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head_config.json"
POOLING = "last_non_padding_token"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last non-padding token, whatever the padding side.

    attention_mask: ``[B, L]`` (1 or True for real tokens). Returns int64 ``[B]``: the largest ``j``
    with ``mask[b, j] == 1``, i.e. ``L - 1`` for left padding and ``sum(mask[b]) - 1`` for right
    padding (the recipe's ``attn.sum(1) - 1`` is only right for the latter). Raises ValueError for a row
    without any real token.
    """
    if attention_mask.ndim != 2:
        raise ValueError(f"attention_mask must be [B, L], got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    empty = ~mask.any(dim=1)
    if empty.any():
        raise ValueError(
            f"rows {empty.nonzero().flatten().tolist()} of the attention mask have no real token"
        )
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).max(dim=1).values


def pool_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden ``[B, L, H]``, attention_mask ``[B, L]`` -> ``[B, H]``: each row's last non-padding state."""
    if hidden.shape[:2] != attention_mask.shape:
        raise ValueError(
            f"hidden {tuple(hidden.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
        )
    index = last_token_index(attention_mask).to(hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def hidden_size_of(config: PretrainedConfig) -> int:
    """Width of the language model's hidden states: ``text_config.hidden_size`` (Qwen-VL) or
    ``hidden_size``. Raises (no guessed default: a wrong width would only fail at the first step)."""
    text = getattr(config, "text_config", None)
    for source in (text, config):
        size = getattr(source, "hidden_size", None) if source is not None else None
        if isinstance(size, int) and size > 0:
            return size
    raise ValueError(f"{type(config).__name__} has neither text_config.hidden_size nor hidden_size")


def classify(
    model: PreTrainedModel | PeftModel, head: torch.nn.Linear, inputs: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Class logits ``[B, C]`` for processor ``inputs`` (input_ids / attention_mask ``[B, L]``, pixels...)."""
    pooled = pool_last_token(last_hidden_state(model, inputs), inputs["attention_mask"])
    return head(pooled.to(head.weight.dtype))


class RewardClassifierModule(TrainableWeightsCheckpoint):
    """Pooled-last-token reward classifier on a Qwen-VL backbone (LoRA or full fine-tuning).

    backbone: what to load (``conf/model``); optim: AdamW settings (``conf/optim``). Gradient
        clipping comes from the trainer (``trainer.gradient_clip_val``, 1.0 as the recipe).
    num_classes: head size (:func:`vlmlab.run.build` passes the datamodule's when the config leaves it
        null).
    class_names: names for the confusion matrix, predictions and the export; default ``"0"..``.
    log_confusion_matrix: add the validation/test confusion matrix as an image to TensorBoard.
    predictions_file: where ``test`` writes one JSON line per sample (evaluate.py sets it).

    Logs ``train/loss``, ``{val,test}/loss`` and ``{stage}/classify/{accuracy,f1_macro}``. A non-finite
    loss is never applied. Checkpoints hold only trainable weights (adapters or unfrozen backbone
    weights, and the head); the frozen base is rebuilt from ``backbone`` on load.
    """

    def __init__(
        self,
        backbone: BackboneSpec | Mapping[str, Any],
        optim: OptimSettings | Mapping[str, Any],
        num_classes: int,
        processor: ProcessorMixin | None = None,
        class_names: Sequence[str] | None = None,
        log_confusion_matrix: bool = True,
        predictions_file: str | None = None,
    ):
        super().__init__()
        # Mappings: the plain-dict hyper-parameters of a checkpoint (load_from_checkpoint) rebuild the spec.
        backbone = _backbone_spec(backbone)
        optim = _optim_settings(optim)
        if num_classes is None or int(num_classes) < 1:
            raise ValueError(f"task.module.num_classes={num_classes}; expected >= 1 (null: the data's)")
        # Plain dicts: checkpoints must load with torch.load(weights_only=True), which refuses classes.
        self.save_hyperparameters(
            {
                "backbone": asdict(backbone),
                "optim": asdict(optim),
                "num_classes": int(num_classes),
                "class_names": list(class_names) if class_names is not None else None,
            }
        )
        self.backbone = backbone
        self.optim = optim
        self.processor = processor if processor is not None else backbone.load_processor()
        self.model = backbone.load_model(self.processor)
        _freeze_untied_lm_head(self.model)
        self.hidden_size = hidden_size_of(self.model.config)
        self.log_confusion_matrix = log_confusion_matrix
        self.predictions_file = predictions_file
        self.num_classes = int(num_classes)
        self.class_names = (
            list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]
        )
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"task.module.class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        device = next(self.model.parameters()).device
        # float32 whatever the backbone dtype: C x H weights cost nothing and keep the logits exact.
        self.head = torch.nn.Linear(self.hidden_size, self.num_classes, device=device)
        self.val_metrics = ClassificationMetrics(self.num_classes)
        self.test_metrics = ClassificationMetrics(self.num_classes)
        self._predictions: list[dict[str, Any]] = []
        trainable, total = count_parameters(self.model)
        log.info(
            "backbone %s: %.2fM trainable of %.2fM parameters; head %s x %s",
            backbone.family,
            trainable / 1e6,
            total / 1e6,
            self.hidden_size,
            self.num_classes,
        )

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits ``[B, C]``."""
        return classify(self.model, self.head, inputs)

    def training_step(self, batch: VisionLanguageBatch, batch_idx: int) -> torch.Tensor | None:
        logits = self(batch.inputs)
        loss = F.cross_entropy(logits.float(), batch.class_labels)
        if skip_nonfinite_loss(self, loss, batch.ids):
            return None  # Lightning skips backward and the optimizer step
        accuracy = (logits.argmax(-1) == batch.class_labels).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch))
        self.log("train/classify/accuracy", accuracy, on_step=False, on_epoch=True, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: VisionLanguageBatch, stage: str) -> None:
        logits = self(batch.inputs)
        loss = F.cross_entropy(logits.float(), batch.class_labels)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch), sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logits, batch.class_labels)
        if stage == "test" and self.predictions_file:
            self._predictions += self._records(batch, logits)

    def validation_step(self, batch: VisionLanguageBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: VisionLanguageBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: VisionLanguageBatch, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        """One record a sample: ``id``, ``episode_index``, ``frame_index`` (and the rest of its metadata),
        ``probabilities`` (C floats), ``predicted`` class, ``expected_reward`` and the ``label`` if known."""
        return self._records(batch, self(batch.inputs))

    def _records(self, batch: VisionLanguageBatch, logits: torch.Tensor) -> list[dict[str, Any]]:
        probabilities = logits.float().softmax(-1)
        rewards = expected_reward(probabilities)
        labels = batch.class_labels.tolist() if batch.class_labels is not None else [None] * len(batch)
        metadata = batch.metadata or [{} for _ in range(len(batch))]
        return [
            {
                **meta,
                "id": sample_id,
                "probabilities": p.tolist(),
                "predicted": int(p.argmax()),
                "expected_reward": float(r),
                "label": label,
            }
            for sample_id, meta, p, r, label in zip(
                batch.ids, metadata, probabilities.cpu(), rewards.cpu(), labels, strict=True
            )
        ]

    def _log_metrics(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        scores = metrics.compute()
        self.log_dict({f"{stage}/{metrics.group}/{k}": v for k, v in scores.items()}, sync_dist=True)
        if self.log_confusion_matrix and not self.trainer.sanity_checking:
            matrix = metrics.confusion_matrix()
            for logger in self.trainer.loggers:
                if isinstance(logger, TensorBoardLogger) and self.trainer.is_global_zero:
                    figure = confusion_matrix_figure(
                        matrix, self.class_names, f"{stage} step {self.global_step}"
                    )
                    logger.experiment.add_figure(
                        f"{stage}/{metrics.group}/confusion_matrix", figure, self.global_step
                    )
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        if self.predictions_file:
            write_predictions(self.predictions_file, self._predictions, self.trainer)
        self._predictions.clear()

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self, self.optim, int(self.trainer.estimated_stepping_batches))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved_classes = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
        if saved_classes is not None and int(saved_classes) != self.num_classes:
            raise ValueError(
                f"checkpoint head has {saved_classes} classes, this module {self.num_classes}: "
                "was it trained on other data or with another task.module.num_classes?"
            )
        super().on_load_checkpoint(checkpoint)

    def export_hf(self, out_dir: str | Path) -> Path:
        """Save in Hugging Face format, loadable with transformers, peft and torch alone
        (:func:`load_reward_classifier`).

        LoRA: ``adapter_config.json`` + ``adapter_model.safetensors`` (for a tiny random backbone also
        its weights in ``out_dir/base``); full fine-tuning: the whole model. Always the processor, the
        head weights ``head.safetensors`` (``weight [C, H]``, ``bias [C]``) and ``head_config.json``
        (``num_classes``, ``hidden_size``, ``class_names``, ``pooling``, ``family``).
        """
        head = self.head
        out = export_backbone(self.model, self.processor, self.backbone, out_dir)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(out / HEAD_WEIGHTS)
        )
        config = {
            "num_classes": self.num_classes,
            "hidden_size": self.hidden_size,
            "class_names": self.class_names,
            "pooling": POOLING,
            "family": self.backbone.family,
            "lora": isinstance(self.model, PeftModel),
        }
        (out / HEAD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        return out


def load_reward_classifier(
    path: str | Path, base: str | Path | PreTrainedModel | None = None
) -> tuple[PreTrainedModel | PeftModel, ProcessorMixin, torch.nn.Linear]:
    """Reload an :meth:`RewardClassifierModule.export_hf` folder with transformers, peft and torch only.

    base: for a LoRA export, the base model (a loaded model, or a folder / cached hub id); None uses
    ``path/base`` when present (tiny backbones), else the adapter's ``base_model_name_or_path``.
    Nothing is downloaded. Returns ``(model, processor, head)`` in eval mode; logits are
    ``classify(model, head, processor(...))``.
    """
    path = Path(path)
    config_path = path / HEAD_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: not found; is {path} a reward classifier export?")
    config = json.loads(config_path.read_text())
    if config.get("pooling", POOLING) != POOLING:
        raise ValueError(f"{config_path}: pooling {config['pooling']!r} is not {POOLING!r}")
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        if base is None:
            local = path / "base"
            base = (
                local
                if (local / "config.json").is_file()
                else json.loads(adapter_config.read_text())["base_model_name_or_path"]
            )
        if not isinstance(base, PreTrainedModel):
            base = AutoModelForImageTextToText.from_pretrained(base, local_files_only=True)
        model: PreTrainedModel | PeftModel = PeftModel.from_pretrained(base, path, local_files_only=True)
    else:
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    hidden_size = hidden_size_of(model.config)
    if hidden_size != config["hidden_size"]:
        raise ValueError(
            f"{config_path}: hidden_size {config['hidden_size']} but the backbone has {hidden_size}"
        )
    head = torch.nn.Linear(config["hidden_size"], config["num_classes"])
    head.load_state_dict(load_file(str(path / HEAD_WEIGHTS)))
    return model.eval(), processor, head.eval()


def _freeze_untied_lm_head(model: PreTrainedModel | PeftModel) -> None:
    """The classifier never runs ``lm_head``: an untied one would get no gradient, yet sit in the
    optimizer, the checkpoints and DDP's unused-parameter check. A tied one is the input embedding
    and stays as configured."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    output, embeddings = base.get_output_embeddings(), base.get_input_embeddings()
    if output is not None and output.weight is not embeddings.weight:
        output.requires_grad_(False)


def _backbone_spec(backbone: BackboneSpec | Mapping[str, Any]) -> BackboneSpec:
    if isinstance(backbone, BackboneSpec):
        return backbone
    fields = dict(backbone)
    if isinstance(fields.get("lora"), Mapping):
        fields["lora"] = LoRASettings(**fields["lora"])
    return BackboneSpec(**fields)


def _optim_settings(optim: OptimSettings | Mapping[str, Any]) -> OptimSettings:
    if isinstance(optim, OptimSettings):
        return optim
    fields = dict(optim)
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return OptimSettings(**fields)


__all__ = [
    "RewardClassifierModule",
    "classify",
    "hidden_size_of",
    "last_hidden_state",
    "last_token_index",
    "load_reward_classifier",
    "pool_last_token",
]
