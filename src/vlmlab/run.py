"""What train.py and evaluate.py do: instantiate the configured objects and run them."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlmlab import exits
from vlmlab.checkpoints import resolve_last

log = logging.getLogger(__name__)


@dataclass
class Run:
    datamodule: pl.LightningDataModule
    module: pl.LightningModule
    trainer: pl.Trainer


def build(cfg: DictConfig, **module_overrides: Any) -> Run:
    """Seed, then build the backbone spec and its processor, the model's facts, the collator, the
    datamodule, the module, callbacks, loggers and trainer.

    This is the one place where a built object configures another: the processor and the model's
    facts (vision geometry, chat markers) go into the collator and the datamodule, the backbone and
    processor into the module, and a classifier's ``num_classes`` comes from the data when the config
    leaves it null.
    """
    pl.seed_everything(cfg.seed, workers=True)
    backbone = instantiate(cfg.model, _convert_="all")
    processor = backbone.load_processor()
    facts = backbone.facts(processor)
    # Runtime objects go in through partials: Hydra would turn a dataclass kwarg into a config node.
    collator = instantiate(cfg.task.collator, _partial_=True, _convert_="all")(
        processor=processor, chat=facts.chat
    )
    datamodule = instantiate(cfg.data, _partial_=True, _convert_="all")(
        collator=collator, vision=facts.vision
    )
    if "num_classes" in cfg.task.module and cfg.task.module.num_classes is None:
        datamodule.prepare_data()  # the synthetic data may not exist yet
        module_overrides["num_classes"] = datamodule.num_classes
    module = instantiate(cfg.task.module, _partial_=True, _convert_="all")(
        backbone=backbone, processor=processor, **module_overrides
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    plugins = trainer_plugins(cfg)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins or None)
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return Run(datamodule, module, trainer)


def trainer_plugins(cfg: DictConfig) -> list[Any]:
    """``trainer.plugins`` (a launcher's, e.g. SLURMEnvironment) and ``checkpoint_io``: a key of its
    own, since a launcher's ``trainer.plugins`` list would replace a list that held it."""
    plugins = list(instantiate(cfg.trainer.get("plugins") or []))
    if cfg.get("checkpoint_io"):
        plugins.append(instantiate(cfg.checkpoint_io))
    return plugins


_R = TypeVar("_R")


def _logs_failure(run: Callable[[DictConfig], _R]) -> Callable[[DictConfig], _R]:
    """Report a failed run in its log with its run folder and overrides, then raise again.

    An error that is not a bug (bad data, a config error, a folder it cannot write:
    :func:`vlmlab.exits.clean_message`) is logged as one message and raised again as
    :class:`vlmlab.exits.CleanError`, which Hydra prints alone, without a traceback, before exiting 1.
    Any other exception is logged with its traceback and raised as it is.

    Hydra's launchers keep running the other jobs of a sweep and raise only at the end, so the failed
    job's own log (``<run folder>/train.log``) is where its message or traceback must be.
    """

    @functools.wraps(run)
    def logged(cfg: DictConfig) -> _R:
        try:
            return run(cfg)
        except Exception as error:
            folder = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False)
            overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
            header = f"run failed: {folder} (overrides: {' '.join(overrides)})"
            message = exits.clean_message(error, cfg)
            if message is None:
                log.exception(header)
                raise
            _log_clean_failure(f"{header}: {message}")
            # Not `from error`: Hydra would print an OmegaConf cause's message a second time. The error
            # stays the context, which HYDRA_FULL_ERROR=1 prints with its traceback.
            raise exits.CleanError(message)  # noqa: B904

    return logged


def _log_clean_failure(message: str) -> None:
    """Log a clean failure; in a single run to the log files only, as Hydra prints it on stderr at once
    (the console would show it twice). A sweep's job logs it everywhere: Hydra raises only at the end."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
    else:
        log.error(message)


@_logs_failure
def train(cfg: DictConfig) -> float | None:
    """Fit (and optionally test); returns ``cfg.optimized_metric`` for sweepers."""
    if cfg.get("warm_start_command") and not cfg.model.get("init_from") and cfg.get("ckpt_path") is None:
        # GRPO from a random tiny backbone earns zero reward on every rollout: nothing to learn from.
        raise exits.ConfigError(
            f"this run starts from a trained checkpoint: run `{cfg.warm_start_command}` first, then pass "
            "model.init_from=<its run folder>/checkpoints/last.ckpt (or run both: make chain EXPERIMENT=...); "
            "warm_start_command=null starts from the untrained model anyway"
        )
    run = build(cfg)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        # Lightning would take the newest last*.ckpt even where a kill left it unreadable.
        callback = run.trainer.checkpoint_callback
        dirpath = callback.dirpath if callback else None
        found = resolve_last(Path(dirpath or Path(cfg.paths.output_dir) / "checkpoints"))
        if found is not None:
            ckpt_path = str(found)
        else:
            # Lightning would only warn and start from scratch; a new run folder is the usual reason.
            log.warning(
                "ckpt_path=last: no checkpoint in %s/checkpoints, so training starts from scratch; to "
                "resume another run pass hydra.run.dir=<its folder> ckpt_path=last, or ckpt_path=<path>",
                cfg.paths.output_dir,
            )
    if cfg.get("train", True):
        if cfg.get("validate_before_training", False) and cfg.get("ckpt_path") is None:
            # Logged at step 0: the start the metrics of the run are compared with (a resumed run has
            # its own step 0 already).
            with exits.sigterm_exits(run.trainer):
                run.trainer.validate(run.module, datamodule=run.datamodule)
        with exits.sigterm_exits(run.trainer):
            run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    metrics = {k: float(v) for k, v in run.trainer.callback_metrics.items()}
    if cfg.get("test", False):
        best = run.trainer.checkpoint_callback.best_model_path if run.trainer.checkpoint_callback else ""
        with exits.sigterm_exits(run.trainer):
            run.trainer.test(run.module, datamodule=run.datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in run.trainer.callback_metrics.items()})
    log.info("final metrics: %s", metrics)
    if cfg.get("optimized_metric") and cfg.optimized_metric not in metrics:
        log.warning(
            "optimized_metric %s was not logged (no validation?): returning None", cfg.optimized_metric
        )
    return metrics.get(cfg.get("optimized_metric") or "")


@_logs_failure
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Score ``cfg.ckpt_path`` on the test split: predictions.jsonl, metrics.json, TensorBoard."""
    checkpoint = Path(cfg.ckpt_path)
    if not checkpoint.exists():
        raise exits.MissingPath(
            f"ckpt_path={cfg.ckpt_path!r} is not a checkpoint (a file, or a DeepSpeed checkpoint folder: "
            "evaluate that with the same strategy)"
        )
    run = build(cfg, predictions_file=cfg.predictions_file)
    if cfg.get("predict", False):
        # Prediction writers (callbacks, e.g. EpisodeRewardWriter) write what the predictions mean.
        with exits.sigterm_exits(run.trainer):
            run.trainer.predict(
                run.module, datamodule=run.datamodule, ckpt_path=str(checkpoint), return_predictions=False
            )
        return {}
    with exits.sigterm_exits(run.trainer):
        results = run.trainer.test(run.module, datamodule=run.datamodule, ckpt_path=str(checkpoint))
    metrics = {k: float(v) for k, v in results[0].items()} if results else {}
    Path(cfg.metrics_file).parent.mkdir(parents=True, exist_ok=True)
    # A mean over no samples is NaN, which strict JSON has no word for: it is written as null.
    finite = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    Path(cfg.metrics_file).write_text(json.dumps(finite, indent=2, allow_nan=False) + "\n")
    log.info("metrics: %s -> %s", metrics, cfg.metrics_file)
    return metrics
