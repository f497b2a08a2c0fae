"""hydra/launcher=slurm on a real SLURM (issue 12): the README's command, a two-job array, and a requeue by
SLURM's own time limit that resumes to max_steps.

They run where a SLURM answers (CI starts a one-node cluster with ``.ci/start_slurm.sh``) and skip, saying
why, where none does. Each writes ``conf/local/slurm.yaml`` for this cluster (the file the README asks for)
and puts back whatever was there. Each bounds its own waiting: on a timeout it cancels its jobs and fails
with the end of the output (without accounting, submitit's waiting never ends for a job that died without
a result, README "Cluster").
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from submitit.core.utils import pickle_load

from tests.helpers import OFFLINE, ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LOCAL_SLURM_YAML = ROOT / "conf" / "local" / "slurm.yaml"
README = ROOT / "README.md"


def slurm_problem() -> str | None:
    """Why no SLURM takes jobs here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here: sinfo/sbatch are not on PATH (as root, .ci/start_slurm.sh starts a one-node SLURM)"
    try:
        answer = subprocess.run(["sinfo", "-h", "-o", "%a %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "no SLURM answers: sinfo did not return in 20 s"
    if answer.returncode != 0:
        return f"no SLURM answers: sinfo failed: {answer.stderr.strip() or answer.returncode}"
    if not re.search(r"^up (idle|mixed|allocated|completing)", answer.stdout, flags=re.M):
        return f"SLURM has no node that takes jobs (sinfo: {answer.stdout.strip()!r})"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm() -> None:
    problem = slurm_problem()
    if problem is not None:
        pytest.skip(problem)


def default_partition() -> str:
    answer = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    names = answer.stdout.split()
    return next((n.rstrip("*") for n in names if n.endswith("*")), names[0] if names else "debug")


@pytest.fixture(scope="module")
def local_slurm_yaml() -> Iterator[Path]:
    """conf/local/slurm.yaml for this one-node CPU cluster; the previous file (git-ignored) is put back."""
    previous = LOCAL_SLURM_YAML.read_bytes() if LOCAL_SLURM_YAML.exists() else None
    LOCAL_SLURM_YAML.write_text(
        "# written by tests/test_slurm.py for the local test cluster\n"
        f"partition: {default_partition()}\n"
        "cpus_per_task: 1\n"
        "mem_gb: 3\n"
        "timeout_min: 20\n"
    )
    try:
        yield LOCAL_SLURM_YAML
    finally:
        if previous is None:
            LOCAL_SLURM_YAML.unlink(missing_ok=True)
        else:
            LOCAL_SLURM_YAML.write_bytes(previous)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, local_slurm_yaml: Path) -> dict[str, str]:
    """Logs and data under a tmp folder, through the paths config's environment variables, so that the
    README's command runs unchanged; the synthetic dataset is shared by the module's jobs."""
    root = tmp_path_factory.mktemp("slurm")
    return {"VLMLAB_LOG_DIR": str(root / "logs"), "VLMLAB_DATA_DIR": str(root / "data")}


def job_ids(log_dir: Path) -> list[str]:
    """The SLURM job ids submitit filed under the sweeps' .submitit folders (array jobs as A_i)."""
    return sorted({p.name for p in log_dir.glob("*/multiruns/*/.submitit/*") if p.is_dir()})


def run_sweep(
    command: str, env: dict[str, str], timeout: float, watch: Callable[[], None] | None = None
) -> float:
    """Run ``command`` (a README line: ``python train.py -m ...``) from the project root and wait at most
    ``timeout`` seconds, calling ``watch`` every few seconds; on a timeout cancel its SLURM jobs and fail.
    Returns the wall time in seconds."""
    args = shlex.split(command)
    assert args[0] == "python", command
    started = time.monotonic()
    log_dir = Path(env["VLMLAB_LOG_DIR"])
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+") as output:  # a file, not a pipe: nothing blocks while we poll
        process = subprocess.Popen(
            [sys.executable, *args[1:]],
            cwd=ROOT,
            env={**os.environ, **OFFLINE, "OMP_NUM_THREADS": "1", **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        while process.poll() is None and time.monotonic() - started < timeout:
            if watch is not None:
                watch()
            time.sleep(5)
        timed_out = process.poll() is None
        if timed_out:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
        output.seek(0)
        text = output.read()
    if timed_out:
        jobs = job_ids(log_dir)
        queue = subprocess.run(["squeue"], capture_output=True, text=True).stdout
        if jobs:
            subprocess.run(["scancel", *{j.split("_")[0] for j in jobs}], check=False)
        pytest.fail(
            f"{command!r} did not end in {timeout:.0f} s (jobs {jobs} cancelled)\n{queue}\n{text[-4000:]}"
        )
    assert process.returncode == 0, text[-4000:]
    return time.monotonic() - started


def sweep_folder(log_dir: str, task: str) -> Path:
    sweeps = sorted((Path(log_dir) / task / "multiruns").iterdir())
    return sweeps[-1]


def results(sweep: Path) -> dict[int, object]:
    """job number -> train.py's return value, from submitit's result pickles (each must be a success)."""
    found: dict[int, object] = {}
    for path in sweep.glob(".submitit/*/*_result.pkl"):
        outcome, job = pickle_load(path)
        assert outcome == "success", (path, job)
        found[int(job.hydra_cfg.hydra.job.num)] = job.return_value  # Hydra's JobReturn
    return found


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def one_last_checkpoint(job_dir: Path) -> int:
    """The step of the job's last.ckpt, after checking it is the folder's only last and only top-1 file."""
    names = sorted(p.name for p in (job_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in names and not [n for n in names if "-v" in n], names
    assert len([n for n in names if n.startswith("step_")]) == 1, names  # save_top_k: 1
    return checkpoint_step(job_dir / "checkpoints" / "last.ckpt")


def readme_command(pattern: str) -> str:
    """The one README line that starts with ``python train.py -m`` and contains ``pattern``."""
    lines = [
        line.strip()
        for line in README.read_text().splitlines()
        if line.strip().startswith("python train.py -m") and pattern in line
    ]
    assert len(lines) == 1, lines
    return lines[0].split("  #")[0].strip()


def test_the_readmes_cpu_partition_command_runs_one_job(folders: dict[str, str]) -> None:
    command = readme_command("hydra/launcher=slurm  # a CPU partition")
    seconds = run_sweep(command, folders, timeout=900)
    sweep = sweep_folder(folders["VLMLAB_LOG_DIR"], "aloha_reward")
    (value,) = results(sweep).values()
    assert isinstance(value, float)  # train.py's optimized_metric: val/classify/accuracy
    (script,) = sweep.glob(".submitit/*/*_submission.sh")
    text = script.read_text()
    assert "#SBATCH --gpus-per-node" not in text and "#SBATCH --signal=USR1@300" in text
    assert one_last_checkpoint(sweep / "0") > 0
    print(f"one job: {seconds:.0f} s")


def test_a_two_job_sweep_is_one_array(folders: dict[str, str]) -> None:
    command = (
        "python train.py -m experiment=aloha_reward preset=tiny hydra/launcher=slurm optim.lr=1e-3,2e-3 "
        "trainer.max_steps=20 trainer.val_check_interval=10 trainer.check_val_every_n_epoch=null"
    )
    seconds = run_sweep(command, folders, timeout=900)
    sweep = sweep_folder(folders["VLMLAB_LOG_DIR"], "aloha_reward")
    assert sorted(results(sweep)) == [0, 1]
    ids = sorted(p.name for p in (sweep / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"]  # one array job, two tasks
    for job in ("0", "1"):
        assert one_last_checkpoint(sweep / job) == 20
    print(f"two-job array: {seconds:.0f} s")


def restarts(job_id: str) -> int:
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    found = re.search(r"Restarts=(\d+)", shown)
    return int(found.group(1)) if found else 0


# SLURM's time limit: --time=2 and USR1 60 s before it (it may come up to 30 s earlier still), so the first
# run trains for 20 to 50 s, fewer than REQUEUE_STEPS steps even on a fast machine. Once requeued, the job's
# time limit is raised, so that the rerun ends the run whatever this machine's speed (without that, a slow
# machine would requeue it again and again, each rerun resuming where the previous one stopped).
REQUEUE_STEPS = 1000


def test_slurms_time_limit_requeues_the_job_which_resumes_to_max_steps(folders: dict[str, str]) -> None:
    command = (
        "python train.py -m experiment=aloha_reward preset=tiny hydra/launcher=slurm "
        "hydra.launcher.timeout_min=2 hydra.launcher.signal_delay_s=60 "
        f"trainer.max_steps={REQUEUE_STEPS} trainer.max_epochs=1000 trainer.val_check_interval=100 "
        "trainer.check_val_every_n_epoch=null"
    )
    log_dir = Path(folders["VLMLAB_LOG_DIR"])
    before = set(job_ids(log_dir))
    lengthened: list[str] = []

    def lengthen_the_rerun() -> None:
        new = sorted(set(job_ids(log_dir)) - before)
        if new and not lengthened and restarts(new[0]) >= 1:
            subprocess.run(["scontrol", "update", f"JobId={new[0]}", "TimeLimit=20"], check=True)
            lengthened.append(new[0])

    seconds = run_sweep(command, folders, timeout=1200, watch=lengthen_the_rerun)
    sweep = sweep_folder(folders["VLMLAB_LOG_DIR"], "aloha_reward")
    (job_id,) = (p.name for p in (sweep / ".submitit").iterdir() if p.is_dir())
    results(sweep)  # a success
    assert lengthened == [job_id]  # requeued by the time limit's USR1 (Lightning's scontrol requeue)
    assert restarts(job_id) == 1
    job_dir = sweep / "0"
    hpc = job_dir / "hpc_ckpt_1.ckpt"  # Lightning's save on USR1, which the rerun resumed from
    assert 0 < checkpoint_step(hpc) < REQUEUE_STEPS
    assert one_last_checkpoint(job_dir) == REQUEUE_STEPS
    print(f"requeue: {seconds:.0f} s, USR1 at step {checkpoint_step(hpc)}")
