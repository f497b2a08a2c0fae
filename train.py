"""Train: ``python train.py experiment=ct_report_sft [preset=tiny] [key=value ...]``.

Exit status: 0 done; 1 failed (bad data, a config error or a folder it cannot write: one message, no
traceback; any other error: its traceback); 143 stopped by SIGTERM. See ``vlmlab.exits``.
"""

import hydra
from omegaconf import DictConfig

import vlmlab.run  # first: importing vlmlab makes torchvision importable on a CPU-only torch


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return vlmlab.run.train(cfg)


if __name__ == "__main__":
    main()
