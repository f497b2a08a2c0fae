"""Evaluate: ``python evaluate.py experiment=ct_report_sft ckpt_path=PATH [preset=tiny]``."""

import hydra
from omegaconf import DictConfig

import vlmlab.run  # first: importing vlmlab makes torchvision importable on a CPU-only torch


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    return vlmlab.run.evaluate(cfg)


if __name__ == "__main__":
    main()
