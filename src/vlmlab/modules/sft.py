"""Generation SFT: next-token loss on assistant tokens; validation by generation with task metrics."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from transformers import ProcessorMixin

from vlmlab.data.collate import IGNORE_INDEX, VisionLanguageBatch
from vlmlab.models.backbone import BackboneSpec, count_parameters, last_hidden_state, lm_head
from vlmlab.modules.common import (
    TrainableWeightsCheckpoint,
    export_backbone,
    skip_nonfinite_loss,
    write_predictions,
)
from vlmlab.modules.generation import GenerationSettings, Generator
from vlmlab.modules.optim import OptimSettings, configure_adamw

log = logging.getLogger(__name__)


class SFTModule(TrainableWeightsCheckpoint):
    """Supervised fine-tuning of a Qwen-VL backbone (LoRA or full).

    backbone: what to load; the model is built here, the processor is shared with the collator.
    metrics: task metrics (``update(predictions, targets)`` / ``compute()`` / ``reset()``) scored on
        generations in validation and test, logged as ``{stage}/{metrics.group}/{name}``.
    predictions_file: where ``test`` writes one JSON line per sample (evaluate.py sets it).
    num_logged_completions: completions shown per validation as a TensorBoard text table.
    Checkpoints hold only trainable parameters (adapters, or the unfrozen weights): the frozen base is
    rebuilt from ``backbone`` on load, so a 7B LoRA checkpoint is megabytes, not gigabytes.
    """

    def __init__(
        self,
        backbone: BackboneSpec,
        optim: OptimSettings,
        generation: GenerationSettings,
        metrics: torch.nn.Module | None = None,
        processor: ProcessorMixin | None = None,
        predictions_file: str | None = None,
        num_logged_completions: int = 4,
    ):
        super().__init__()
        # Plain dicts: checkpoints must load with torch.load(weights_only=True), which refuses classes.
        self.save_hyperparameters(
            {"backbone": asdict(backbone), "optim": asdict(optim), "generation": asdict(generation)}
        )
        self.backbone = backbone
        self.optim = optim
        self.generation = generation
        self.metrics = metrics
        self.processor = processor if processor is not None else backbone.load_processor()
        self.model = backbone.load_model(self.processor)
        self.generator = Generator(
            self.processor.tokenizer, backbone.chat.end_of_turn_id(self.processor.tokenizer)
        )
        self.predictions_file = predictions_file
        self.num_logged_completions = num_logged_completions
        self._completions: list[dict[str, Any]] = []
        self._predictions: list[dict[str, Any]] = []
        trainable, total = count_parameters(self.model)
        log.info(
            "backbone %s: %.2fM trainable of %.2fM parameters", backbone.family, trainable / 1e6, total / 1e6
        )

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def forward(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor | None = None) -> Any:
        return self.model(**inputs, labels=labels)

    def training_step(self, batch: VisionLanguageBatch, batch_idx: int) -> torch.Tensor | None:
        loss = assistant_token_loss(self.model, batch.inputs, batch.labels)
        if skip_nonfinite_loss(self, loss, batch.ids):
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(batch))
        self.log("train/tokens", (batch.labels != -100).sum().float(), on_step=True, reduce_fx="sum")
        return loss

    def _evaluate(self, batch: VisionLanguageBatch, stage: str) -> list[str]:
        loss = assistant_token_loss(self.model, batch.inputs, batch.labels)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(batch), sync_dist=True)
        predictions = self.generator.generate(self.model, batch.prompt_inputs, self.generation).texts
        if self.metrics is not None:
            self.metrics.update(predictions, batch.targets)
        for sample_id, prediction, answer, target in zip(
            batch.ids, predictions, batch.answers, batch.targets, strict=True
        ):
            record = {"id": sample_id, "prediction": prediction, "answer": answer, "target": target}
            if len(self._completions) < self.num_logged_completions:
                self._completions.append(record)
            if stage == "test":
                self._predictions.append(record)
        return predictions

    def validation_step(self, batch: VisionLanguageBatch, batch_idx: int) -> dict[str, list[str]]:
        """Generated answers, returned so that callbacks (e.g. pictures) see them as ``outputs``."""
        return {"predictions": self._evaluate(batch, "val")}

    def test_step(self, batch: VisionLanguageBatch, batch_idx: int) -> dict[str, list[str]]:
        return {"predictions": self._evaluate(batch, "test")}

    def _log_metrics(self, stage: str) -> None:
        if self.metrics is not None:
            scores = self.metrics.compute()
            self.log_dict({f"{stage}/{self.metrics.group}/{k}": v for k, v in scores.items()}, sync_dist=True)
            self.metrics.reset()
        if self._completions and isinstance(self.logger, TensorBoardLogger):
            rows = ["| id | prediction | answer |", "|---|---|---|"]
            rows += [
                f"| {r['id']} | {_cell(r['prediction'])} | {_cell(r['answer'])} |" for r in self._completions
            ]
            self.logger.experiment.add_text(f"{stage}/completions", "\n".join(rows), self.global_step)
        self._completions.clear()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
        if self.predictions_file:
            write_predictions(self.predictions_file, self._predictions, self.trainer)
        self._predictions.clear()

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw(self.model, self.optim, int(self.trainer.estimated_stepping_batches))

    def export_hf(self, out_dir: str | Path) -> Path:
        """The backbone and processor in Hugging Face format (:func:`export_backbone`)."""
        return export_backbone(self.model, self.processor, self.backbone, out_dir)


def assistant_token_loss(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (assistant) tokens.

    Equal to the Hugging Face causal-LM loss, but the output projection runs only where a label is:
    vision and prompt tokens dominate these sequences, and each position costs a vocabulary-wide
    (151,936) row of logits. inputs: processor tensors; labels: [B, L], IGNORE_INDEX elsewhere.
    """
    hidden = last_hidden_state(model, inputs)  # [B, L, H]
    targets = labels[:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE_INDEX
    logits = lm_head(model)(hidden[:, :-1][keep])  # [K, V]
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")[:300]
