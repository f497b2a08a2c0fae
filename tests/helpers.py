"""Compose the project's Hydra configs in tests, with run folders under a tmp path."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(config_name: str, overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """Compose like the entry points do, with ``${hydra:...}`` resolvable and folders under output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # read-only; ${hydra:...} now resolves through HydraConfig
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.root_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir / "run")
            cfg.paths.log_dir = str(output_dir / "logs")
    return cfg
