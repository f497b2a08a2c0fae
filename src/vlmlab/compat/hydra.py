"""A workaround for Hydra 1.3 (hydra-core 1.3.8, the newest release): in a multirun, ``${hydra:...}``
cannot resolve while the sweeper and the launcher are built.

The problem: ``Hydra.multirun`` composes the sweep's config, then builds the callbacks, the sweeper and
the launcher from it, and only each job's ``run_job`` puts a config in ``HydraConfig``. Building the
launcher resolves ``hydra.launcher`` (its ``submitit_folder`` is under ``hydra.sweep.dir``), and the
basic launcher resolves ``hydra.sweep.dir`` before its first job. vlmlab's sweep folder is under
``paths.log_dir``, whose default is under ``paths.root_dir: ${oc.env:VLMLAB_ROOT,${hydra:runtime.cwd}}``
(OmegaConf resolves a resolver's default before the call, so setting ``VLMLAB_ROOT`` does not help). So
every ``-m`` command that did not pass ``paths.log_dir`` failed before its first job with
``InterpolationResolutionError: ... HydraConfig was not set``. Hydra's issue #3427; its fix (pull request
#3439, not in a release yet) sets ``HydraConfig`` to the sweep's config before the callbacks and the
sweeper are built, and puts the previous value back when the multirun ends.

The workaround, :class:`SweepHydraConfig`, does the same from the first Hydra callback
(``hydra.callbacks.sweep_hydra_config`` in ``conf/hydra/default.yaml``): ``on_multirun_start`` runs
after the callbacks are built and before the sweeper, and the sweep-level values it makes resolvable
(``runtime.cwd``, ``runtime.choices``, ``job.name``, ...) are the ones the jobs see too. Each job still
puts its own config in ``HydraConfig`` while it runs (``run_job`` saves and restores the value).
``tests/test_launchers.py`` shows the failure without it on the installed Hydra; once a Hydra release
carries the fix, that test fails and this module can go.
"""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["SweepHydraConfig"]


class SweepHydraConfig(Callback):
    """Sets ``HydraConfig`` to the sweep's config for the whole multirun (see the module's docstring)."""

    def __init__(self) -> None:
        self._previous: DictConfig | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_config = HydraConfig.instance()
        self._previous = hydra_config.cfg
        hydra_config.set_config(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().cfg = self._previous
        self._previous = None
