"""hydra/launcher=slurm and hydra/launcher=local: the sbatch script, Lightning's requeue, a real local sweep."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError
from submitit.core.utils import DelayedSubmission, JobPaths, pickle_load
from submitit.local.local import LocalExecutor
from submitit.slurm.slurm import SlurmExecutor, SlurmJobEnvironment
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import CONF, SLURM_ONE_TASK, compose_config, run_script
from vlmlab.launchers import gpus_per_node

SLURM = [
    "experiment=brats_grpo",
    "strategy=deepspeed_zero3",
    "hydra/launcher=slurm",
    "trainer.num_nodes=2",
    "trainer.devices=4",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.account=proj42",
    "hydra.launcher.timeout_min=720",
    "hydra.launcher.cpus_per_task=10",
    "hydra.launcher.mem_gb=400",
    "hydra.launcher.setup=[module load cuda/12.4,source .venv/bin/activate]",
]


class _Submitted(Exception):
    """Raised instead of calling sbatch: the test has the script it would have submitted."""


@pytest.fixture
def sbatch_scripts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the real launcher up to `sbatch`: no cluster needed, the scripts land in the returned list."""
    scripts: list[str] = []

    def submit(executor: SlurmExecutor, command: str) -> None:
        scripts.append(executor._make_submission_file_text(command, "test"))
        raise _Submitted

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # pretend srun exists
    monkeypatch.setattr(SlurmExecutor, "_submit_command", submit)
    return scripts


@pytest.fixture
def hydra_app() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def multirun_sbatch(overrides: list[str], tmp_path: Path | None, scripts: list[str]) -> str:
    """What `train.py -m OVERRIDES` submits: Hydra's own multirun (sweeper + submitit launcher), with
    the logs under tmp_path (None: the default, logs/ in the folder it runs in)."""
    hydra = GlobalHydra.instance().hydra
    assert hydra is not None
    log_dir = [] if tmp_path is None else [f"paths.log_dir={tmp_path}/logs"]
    with pytest.raises(_Submitted):
        hydra.multirun(
            config_name="train",
            task_function=lambda cfg: None,
            overrides=[*overrides, *log_dir],
            with_log_configuration=False,
        )
    (script,) = scripts
    return script


def sbatch_lines(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?$", script, flags=re.M))


@pytest.mark.usefixtures("hydra_app")
def test_slurm_sbatch_for_brats_grpo_on_two_nodes_of_four_gpus(
    tmp_path: Path, sbatch_scripts: list[str]
) -> None:
    script = multirun_sbatch([*SLURM, "optim.lr=1e-6,2e-6"], tmp_path, sbatch_scripts)
    flags = sbatch_lines(script)
    assert flags["nodes"] == "2"
    assert flags["ntasks-per-node"] == "4"  # one process per GPU, started by srun
    assert flags["gpus-per-node"] == "4"
    assert flags["partition"] == "gpu" and flags["account"] == "proj42"
    assert flags["time"] == "720" and flags["mem"] == "400GB" and flags["cpus-per-task"] == "10"
    assert flags["array"] == "0-1%2"  # the sweep's two jobs, one array
    assert flags["signal"] == "USR1@300" and "requeue" in flags
    assert "\n# setup\nmodule load cuda/12.4\nsource .venv/bin/activate\n" in script
    assert re.search(r"^srun --unbuffered .* -u -m submitit.core._submit ", script, flags=re.M)
    assert f"{tmp_path}/logs/brats_grpo/multiruns/" in flags["output"]


@pytest.mark.usefixtures("hydra_app")
def test_devices_swept_inside_one_launcher_get_the_master_configs_resources(
    tmp_path: Path, sbatch_scripts: list[str]
) -> None:
    """Why the README says not to sweep trainer.devices: one sbatch array, resolved once, for all jobs."""
    script = multirun_sbatch(
        ["experiment=brats_grpo", "hydra/launcher=slurm", "trainer.devices=1,4"], tmp_path, sbatch_scripts
    )
    flags = sbatch_lines(script)
    assert flags["array"] == "0-1%2"
    assert flags["ntasks-per-node"] == "1" and flags["gpus-per-node"] == "1"  # job #1 wanted 4


@pytest.fixture
def local_submissions(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Run the real local launcher up to starting its jobs: the executor's parameters land in the list."""
    submitted: list[dict[str, object]] = []

    def submit(executor: LocalExecutor, command: str) -> None:
        submitted.append(dict(executor.parameters))
        raise _Submitted

    monkeypatch.setattr(LocalExecutor, "_submit_command", submit)
    return submitted


@pytest.mark.usefixtures("hydra_app")
@pytest.mark.parametrize("launcher", ["basic", "local", "slurm"])
def test_a_sweep_resolves_its_folders_and_launcher_with_the_default_paths(
    launcher: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sbatch_scripts: list[str],
    local_submissions: list[dict[str, object]],
) -> None:
    """`-m` without paths.log_dir: logs/ under the folder it was started in (paths.root_dir's default,
    ${hydra:runtime.cwd}), which resolves only through HydraConfig (vlmlab.compat.hydra)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # as in a fresh `train.py -m` process
    sweep = tmp_path / "logs" / "aloha_reward" / "multiruns"
    overrides = ["experiment=aloha_reward", "preset=tiny", "optim.lr=1e-3,2e-3"]
    if launcher == "slurm":
        script = multirun_sbatch([*overrides, "hydra/launcher=slurm"], None, sbatch_scripts)
        assert sbatch_lines(script)["output"].startswith(f"{sweep}/")
    elif launcher == "local":
        with pytest.raises(_Submitted):
            hydra_multirun([*overrides, "hydra/launcher=local"], lambda cfg: None)
        assert len(local_submissions) == 1
    else:
        job_folders: list[str] = []
        hydra_multirun(overrides, lambda cfg: job_folders.append(cfg.paths.output_dir))
        assert [Path(f).relative_to(sweep).parts[1] for f in job_folders] == ["0", "1"]
    (folder,) = sweep.iterdir()  # the sweep's folder, made by the launcher
    assert folder.name.startswith("20")


@pytest.mark.usefixtures("hydra_app")
def test_hydra_still_needs_the_sweep_hydra_config_workaround(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hydra-core 1.3.8 builds a sweep's launcher before any HydraConfig is set (Hydra issue #3427). When
    this fails, the installed Hydra sets it itself: remove vlmlab.compat.hydra and its callback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # as in a fresh `train.py -m` process
    with pytest.raises(InterpolationResolutionError, match="HydraConfig was not set"):
        hydra_multirun(
            ["experiment=aloha_reward", "preset=tiny", "~hydra.callbacks.sweep_hydra_config"],
            lambda cfg: None,
        )


def hydra_multirun(overrides: list[str], task: Callable[[DictConfig], object]) -> object:
    hydra = GlobalHydra.instance().hydra
    assert hydra is not None
    return hydra.multirun(
        config_name="train", task_function=task, overrides=overrides, with_log_configuration=False
    )


@pytest.mark.usefixtures("hydra_app")
@pytest.mark.parametrize(
    ("overrides", "gpus"),
    [
        (["experiment=aloha_reward", "preset=tiny"], None),  # the tiny preset: trainer.accelerator=cpu
        (["experiment=brats_grpo", "trainer.accelerator=cpu", "trainer.devices=2"], None),
        (["experiment=brats_grpo", "trainer.devices=4"], "4"),  # accelerator auto: a GPU job
        (["experiment=brats_grpo", "trainer.accelerator=cuda", "trainer.devices=2"], "2"),
    ],
)
def test_slurm_requests_gpus_only_for_a_gpu_trainer(
    overrides: list[str], gpus: str | None, tmp_path: Path, sbatch_scripts: list[str]
) -> None:
    """sbatch refuses a GPU request on a node without GPUs ("Invalid generic resource (gres)
    specification"): a CPU job asks for none; the tasks still follow trainer.devices."""
    flags = sbatch_lines(multirun_sbatch([*overrides, "hydra/launcher=slurm"], tmp_path, sbatch_scripts))
    assert flags.get("gpus-per-node") == gpus
    assert "gres" not in flags
    devices = [o.split("=", 1)[1] for o in overrides if o.startswith("trainer.devices=")]
    assert flags["ntasks-per-node"] == (gpus or (devices[0] if devices else "1"))


@pytest.mark.usefixtures("hydra_app")
def test_local_launcher_gives_a_cpu_job_no_gpus(
    tmp_path: Path, local_submissions: list[dict[str, object]]
) -> None:
    with pytest.raises(_Submitted):
        hydra_multirun(
            ["experiment=aloha_reward", "preset=tiny", "hydra/launcher=local", f"paths.log_dir={tmp_path}"],
            lambda cfg: None,
        )
    (params,) = local_submissions
    assert params["gpus_per_node"] == 0  # submitit's CUDA_VISIBLE_DEVICES is then empty


def test_gpus_per_node_needs_a_device_count_for_a_gpu_trainer() -> None:
    assert gpus_per_node("cpu", "auto") is None and gpus_per_node("CPU", 4, 0) == 0
    assert gpus_per_node("cuda", "0,1") == 2
    with pytest.raises(ValueError, match=r"trainer.devices='auto'.*set trainer.devices=N"):
        gpus_per_node("auto", "auto")


def test_slurm_launcher_turns_on_lightnings_requeue_on_the_sbatch_signal(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=brats_grpo", "hydra/launcher=slurm"], tmp_path)
    (plugin,) = [instantiate(p) for p in cfg.trainer.plugins]
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue
    sbatch_signal = HydraConfig.get().launcher.additional_parameters.signal.split("@")[0]
    assert plugin.requeue_signal == getattr(signal, f"SIG{sbatch_signal}")


@pytest.fixture
def slurm_task(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The environment of a one-task srun step, with submitit's handlers installed as its job process does."""
    for name, value in {**SLURM_ONE_TASK, "SUBMITIT_EXECUTOR": "slurm"}.items():
        monkeypatch.setenv(name, value)
    handled = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT)
    saved = {s: signal.getsignal(s) for s in handled}
    try:
        SlurmJobEnvironment()._handle_signals(JobPaths(tmp_path), DelayedSubmission(print))
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@pytest.mark.usefixtures("slurm_task")
def test_lightning_requeues_on_usr1_beside_submitits_usr2_handler() -> None:
    """Lightning installs its requeue handler only on a signal without one; submitit's job owns USR2."""

    def handlers(environment: SLURMEnvironment) -> tuple[object, object]:
        trainer = pl.Trainer(accelerator="cpu", devices=1, plugins=[environment], logger=False)
        trainer._signal_connector.register_signal_handlers()
        requeue = signal.getsignal(environment.requeue_signal)
        trainer._signal_connector.teardown()
        return requeue, trainer._signal_connector._slurm_sigusr_handler_fn

    submitits = signal.getsignal(signal.SIGUSR2)
    assert getattr(submitits, "__name__", "") == "checkpoint_and_try_requeue"
    requeue, lightnings = handlers(SLURMEnvironment(auto_requeue=True))  # as conf/hydra/launcher/slurm.yaml
    assert lightnings in requeue.signal_handlers
    # Agreeing on submitit's USR2 instead would leave submitit's handler alone: no hpc checkpoint.
    requeue, _ = handlers(SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR2))
    assert requeue == submitits


def test_local_launcher_runs_on_one_machine_without_the_slurm_plugin(tmp_path: Path) -> None:
    cfg = compose_config(
        "train", ["experiment=ct_report_sft", "preset=tiny", "hydra/launcher=local"], tmp_path
    )
    launcher = HydraConfig.get().launcher
    assert launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert (launcher.nodes, launcher.tasks_per_node) == (1, 1)  # Lightning starts the device processes
    assert "plugins" not in cfg.trainer


@pytest.mark.slow
def test_local_launcher_runs_a_two_job_sweep_each_in_its_own_folder(tmp_path: Path) -> None:
    from vlmlab.data.synthetic.ct_report import write

    # Written up front so that neither job spends its time on it (parallel first writes are safe too).
    write(tmp_path / "data" / "synthetic" / "ct_report")
    args = [
        "train.py",
        "-m",
        "experiment=ct_report_sft",
        "preset=tiny",
        "hydra/launcher=local",
        "optim.lr=1e-3,3e-3",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.val_check_interval=1.0",  # the tiny preset validates every N steps
        "task.module.generation.max_new_tokens=8",
        f"paths.log_dir={tmp_path}/logs",
        f"paths.data_dir={tmp_path}/data",
    ]
    run_script(args, timeout=600)
    (sweep,) = (tmp_path / "logs" / "ct_report_sft" / "multiruns").iterdir()
    assert (sweep / "multirun.yaml").is_file()
    results = sorted(sweep.glob(".submitit/*_result.pkl"))
    assert len(results) == 2
    for result_pickle in results:
        outcome, job = pickle_load(result_pickle)
        assert outcome == "success"
        job_dir = sweep / str(job.hydra_cfg.hydra.job.num)
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        events = EventAccumulator(str(job_dir / "tensorboard"))
        events.Reload()
        # train.py returned the optimized metric (val/loss), the value this job's TensorBoard run holds
        assert job.cfg.optimized_metric == "val/loss"
        assert job.return_value == pytest.approx(events.Scalars("val/loss")[-1].value, rel=1e-6)
        assert OmegaConf.load(job_dir / ".hydra" / "config.yaml").optim.lr == job.cfg.optim.lr
        assert requeued_job_dir(result_pickle) == job_dir
    assert {pickle_load(p)[1].cfg.optim.lr for p in results} == {1e-3, 3e-3}


def requeued_job_dir(result_pickle: Path) -> Path:
    """The folder the job would run in again after a requeue, recomposed from its submitted pickle.

    A requeue (Lightning's `scontrol requeue`) reruns `submitit.core._submit` on the same pickle: the
    launcher recomposes the job's config from it, as this does, later and in another process.
    """
    job_id = result_pickle.name.split("_")[0]
    submitted = DelayedSubmission.load(result_pickle.parent / f"{job_id}_submitted.pkl")
    launcher = submitted.function
    overrides, _, job_num, _, singletons = submitted.args
    saved = Singleton.get_state()  # the ConfigStore and OmegaConf's resolvers
    try:
        Singleton.set_state(singletons)
        setup_globals()  # Hydra's resolvers (${now:...}), as the launcher's __call__ registers them
        cfg: DictConfig = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.num = job_num
        return Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
    finally:
        Singleton.set_state(saved)
