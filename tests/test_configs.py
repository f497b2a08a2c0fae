"""Every experiment composes, and every ``_target_`` node's arguments bind to its target."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from tests.helpers import CONF, compose_config

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
# Arguments the entry points pass at instantiation time (vlmlab.run.build).
RUNTIME_ARGS = {
    "backbone",
    "processor",
    "collator",
    "vision",
    "chat",
    "callbacks",
    "logger",
    "predictions_file",
}
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def target_nodes(node: object, where: str = "") -> list[tuple[str, DictConfig]]:
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((where, node))
        for key in node:
            found += target_nodes(node[key], f"{where}.{key}")
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found += target_nodes(item, f"{where}[{i}]")
    return found


def parameters(target: object) -> tuple[dict[str, inspect.Parameter], bool]:
    """A target's parameters; a class whose __init__ forwards **kwargs to its base also takes the base's."""
    params = dict(inspect.signature(target).parameters)
    forwards = any(p.kind == p.VAR_KEYWORD for p in params.values())
    if forwards and inspect.isclass(target):
        for base in target.__mro__[1:]:
            if "__init__" not in vars(base):
                continue
            base_params = inspect.signature(base.__init__).parameters
            params.update({n: p for n, p in base_params.items() if n != "self" and p.kind != p.VAR_KEYWORD})
            forwards = any(p.kind == p.VAR_KEYWORD for p in base_params.values())
            if not forwards:
                break
    params = {n: p for n, p in params.items() if p.kind != p.VAR_KEYWORD}
    return params, forwards


def assert_targets_bind(cfg: DictConfig) -> None:
    for where, node in target_nodes(cfg):
        target = get_object(node._target_)
        kwargs = {k: None for k in node if k not in HYDRA_KEYS}
        params, accepts_any = parameters(target)
        if not accepts_any:
            unknown = set(kwargs) - set(params)
            assert not unknown, f"{where}: {node._target_} has no argument(s) {sorted(unknown)}"
        if node.get("_partial_", False):
            continue  # a partial gets its remaining arguments when called
        own = inspect.signature(target).parameters  # a base's required arguments are the subclass's job
        required = {
            n
            for n, p in own.items()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"
        }
        missing = required - set(kwargs) - RUNTIME_ARGS
        assert not missing, f"{where}: {node._target_} needs {sorted(missing)}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_experiment_composes_and_binds(experiment: str, preset: str | None, tmp_path: Path) -> None:
    overrides = [f"experiment={experiment}"] + ([f"preset={preset}"] if preset else [])
    cfg = compose_config("train", overrides, tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.task_name == experiment
    assert_targets_bind(cfg)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes(model: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"model={model}"], tmp_path)
    assert_targets_bind(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_evaluate_config_composes(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config(
        "evaluate", [f"experiment={experiment}", "preset=tiny", "ckpt_path=x.ckpt"], tmp_path
    )
    OmegaConf.resolve(cfg)
    assert_targets_bind(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("preset", [None, "tiny"])
def test_train_and_evaluate_configure_an_experiment_alike(
    experiment: str, preset: str | None, tmp_path: Path
) -> None:
    """conf/base.yaml is both entry points' defaults list: the model, data, task (its generation length
    included), reward and trainer of an evaluation are those of the training run."""
    overrides = [f"experiment={experiment}"] + ([f"preset={preset}"] if preset else [])
    train = compose_config("train", overrides, tmp_path)
    evaluate = compose_config("evaluate", [*overrides, "ckpt_path=x.ckpt"], tmp_path)
    for group in ("model", "data", "task", "reward", "optim", "trainer", "callbacks"):
        assert OmegaConf.to_container(train[group]) == OmegaConf.to_container(evaluate[group]), group
    assert train.seed == evaluate.seed


def test_preset_tiny_keeps_family_and_makes_it_tiny(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=ct_report_sft", "preset=tiny", "model=qwen3_vl_4b"], tmp_path)
    assert cfg.model.family == "qwen3_vl" and cfg.model.tiny
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.data.root.endswith("synthetic/ct_report")


def test_bind_check_catches_a_wrong_argument(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=ct_report_sft", "+data.not_an_argument=1"], tmp_path)
    with pytest.raises(AssertionError, match="not_an_argument"):
        assert_targets_bind(cfg)
