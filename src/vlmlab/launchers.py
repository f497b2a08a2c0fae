"""What ``hydra/launcher=slurm`` and ``hydra/launcher=local`` request, read from the trainer's config.

``${vlmlab.gpus_per_node:${trainer.accelerator},${trainer.devices}}`` (``conf/hydra/launcher/*.yaml``) is
:func:`gpus_per_node`: ``trainer.devices`` GPUs on each node when the trainer runs on GPUs, and no GPU
request when it runs on the CPU. A CPU job must not ask for GPUs: on a node without them sbatch refuses
the whole script (``Invalid generic resource (gres) specification``), and the local launcher would
hand the job ``CUDA_VISIBLE_DEVICES``. :func:`register_resolvers` (run by ``import vlmlab``, like the
entry points, the tests and every submitit job do) makes the resolver known to OmegaConf.
"""

from __future__ import annotations

from typing import Any

from omegaconf import ListConfig, OmegaConf

__all__ = ["GPU_ACCELERATORS", "gpus_per_node", "register_resolvers"]

# Lightning's accelerator names that run on CUDA GPUs; `auto` picks them where there are GPUs (a
# cluster's GPU partition). Any other (`cpu`, ...) requests none.
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def gpus_per_node(accelerator: Any, devices: Any, none: Any = None) -> Any:
    """GPUs per node for ``trainer.accelerator`` and ``trainer.devices``: the device count for a GPU
    accelerator, else ``none`` (null: no ``--gpus-per-node`` line; the local launcher passes 0)."""
    if str(accelerator).lower() not in GPU_ACCELERATORS:
        return none
    if isinstance(devices, list | tuple | ListConfig):
        return len(devices)  # device indices, e.g. [0, 1]
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        count = int(devices)
    except (TypeError, ValueError):
        count = -1
    if count < 1:
        raise ValueError(
            f"trainer.devices={devices!r} with trainer.accelerator={accelerator}: a launcher requests a "
            "number of GPUs per node, so set trainer.devices=N (or trainer.accelerator=cpu for a CPU job)"
        )
    return count


def register_resolvers() -> None:
    """Make ``${vlmlab.gpus_per_node:...}`` resolvable (idempotent)."""
    OmegaConf.register_new_resolver("vlmlab.gpus_per_node", gpus_per_node, replace=True)
