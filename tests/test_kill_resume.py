"""Kill -9 anywhere, resume with ``ckpt_path=last``: the run ends as if it had never stopped.

A tiny SFT run and a tiny GRPO run are started through ``train.py`` in a subprocess, killed with
SIGKILL at a step drawn from a seeded generator once a checkpoint of that step is on disk (a random
moment later, so the kill lands mid-step or mid-write), and resumed in the same run folder with
``ckpt_path=last``. Each must end with the trainable weights of an uninterrupted run with the same
seed (computed once per module) and log the same scalars (and GRPO completion tables) for every step
after the resume point, final validation included. The GRPO run reuses each rollout batch for two
optimizer steps (``num_iterations=2``) and is killed inside such a cycle, so the resumed run must
train on the checkpointed rollouts, not regenerate them.

What this adds to ``tests/test_resume.py`` (in-process, stopped by an exception at a chosen step): a
fresh interpreter (other hash seed, nothing left in memory), the real command line, a kill that can
land during a checkpoint write, and TensorBoard files of two processes in one folder.

``VLMLAB_KILL_SEED=<n>`` draws other kill moments.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import OFFLINE, ROOT

KILL_SEED = int(os.environ.get("VLMLAB_KILL_SEED", "11"))
STEPS = 6  # both runs: 6 optimizer steps, so a kill can leave several to redo

# Checkpoint every step, keeping the newest step file beside last.ckpt: its name tells the poll
# how far the run is, and a kill while last.ckpt is written still leaves that step's file.
CHECKPOINT_EVERY_STEP = [
    "+callbacks.model_checkpoint.every_n_train_steps=1",
    "callbacks.model_checkpoint.monitor=null",  # else saves wait for the monitored val metric
    "callbacks.model_checkpoint.save_top_k=1",  # with no monitor: the newest step_*.ckpt
    "callbacks.hf_export=null",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.log_every_n_steps=1",
    "trainer.limit_val_batches=1",  # validation at step 0 and after the last step
]

# Both runs pin their length and validation schedule, whatever the tiny presets set.
SFT = [
    "experiment=ct_report_sft",
    "preset=tiny",
    "data.synth_cases=12",
    "data.synth_options.num_val=8",
    "data.batch_size=2",
    f"trainer.max_steps={STEPS}",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",  # 2 epochs x 3 batches: STEPS
    "trainer.accumulate_grad_batches=1",
    "trainer.val_check_interval=1.0",
    "trainer.check_val_every_n_epoch=2",
    "task.module.generation.max_new_tokens=8",
    *CHECKPOINT_EVERY_STEP,
]

GRPO = [
    "experiment=mcqa_grpo",
    "preset=tiny",
    "warm_start_command=null",  # a random start: the test reward below pays it anyway
    "data.synth_rows=8",
    "data.synth_options.num_val=8",
    "data.batch_size=2",
    f"trainer.max_steps={STEPS}",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=2",  # 3 epochs x 2 batches: STEPS
    "trainer.accumulate_grad_batches=1",
    "trainer.val_check_interval=1.0",
    "trainer.check_val_every_n_epoch=3",
    "task.module.generation.max_new_tokens=8",
    "task.module.grpo.num_generations=2",
    # Rollouts at steps 1, 3, 5 (1-based), each reused by the next step: a checkpoint after an odd
    # step holds a rollout buffer the resumed run must train on.
    "task.module.grpo.num_iterations=2",
    "task.module.grpo.beta=0.04",  # reference log-probs in the buffer too
    "task.module.grpo.log_completions_every_n_steps=1",  # the rollouts themselves, compared per step
    "model.freeze_vision=true",  # encoded vision (media) in the buffer too
    "optim.lr=1e-3",
    # Random text earns no MCQA reward (all advantages 0); this one varies between completions.
    "reward.terms.mcqa.score._target_=tests.test_kill_resume.distinct_characters",
    "reward.terms.mcqa.weights=null",
    *CHECKPOINT_EVERY_STEP,
]

# ---------------------------------------------------------------- a reward that random text earns

DEFAULT_WEIGHTS = {"distinct": 1.0}  # read by vlmlab.rewards.compose.RewardTerm for this "family"


def distinct_characters(
    completion: str, target: Mapping[str, Any], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The fraction of distinct characters in ``completion`` (weighted): differs between random
    completions, so GRPO's advantages (and the update) depend on which rollouts were sampled."""
    weight = {**DEFAULT_WEIGHTS, **(weights or {})}["distinct"]
    text = completion if isinstance(completion, str) else ""
    value = weight * len(set(text)) / len(text) if text else 0.0
    return {"distinct": value, "total": value}


# ---------------------------------------------------------------- runs


def command(run_dir: Path, data_dir: Path, overrides: list[str], resume: bool = False) -> list[str]:
    extra = ["ckpt_path=last"] if resume else []  # the newest readable checkpoints/*.ckpt
    return [
        sys.executable,
        "train.py",
        *overrides,
        *extra,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={run_dir.parent / 'logs'}",
        f"hydra.run.dir={run_dir}",
    ]


@dataclass
class Started:
    process: subprocess.Popen
    out: Path  # its stdout and stderr


def start(run_dir: Path, data_dir: Path, overrides: list[str], resume: bool = False) -> Started:
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir.parent / f"{run_dir.name}{'.resumed' if resume else ''}.out"
    with open(out, "w") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            command(run_dir, data_dir, overrides, resume),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **OFFLINE},
        )
    return Started(process, out)


def finish(run: Started, timeout: float = 600) -> None:
    try:
        code = run.process.wait(timeout=timeout)
    finally:
        run.process.kill()  # no-op once it exited
    assert code == 0, f"{run.process.args[2:]} exited {code}:\n{run.out.read_text()[-4000:]}"


def newest_step(checkpoints: Path, begun: bool = False) -> int:
    """The step of the newest ``step_NNNNNN.ckpt``, written whole and renamed, so present = complete;
    ``begun``: also counting those being written (``vlmlab.checkpoints`` writes ``.<name>.tmp-<pid>``)."""
    names = [p.name for p in checkpoints.glob("step_*.ckpt")]
    names += [p.name[1:] for p in checkpoints.glob(".step_*.ckpt.tmp-*")] if begun else []
    return max((int(name[len("step_") :].split(".")[0]) for name in names), default=0)


@dataclass
class Kill:
    pid: int  # of the killed process
    after_step: int  # the checkpoint that had to exist
    waited_s: float  # after that checkpoint appeared, before SIGKILL
    mid_write: list[str]  # checkpoint files being written at the kill
    resumed_from: Path  # what ckpt_path=last resolved to
    resume_step: int  # its global_step
    checkpoint: dict[str, Any] = field(repr=False)


def run_and_kill(
    run_dir: Path, data_dir: Path, overrides: list[str], after_step: int, delay_s: float
) -> Kill:
    """Start a run; SIGKILL it ``delay_s`` after the checkpoint of ``after_step`` appears, or sooner,
    as soon as the next step's checkpoint starts to be written (so the resume is from ``after_step``,
    and the kill can land during that write)."""
    from vlmlab.checkpoints import resolve_last

    run = start(run_dir, data_dir, overrides)
    process = run.process
    checkpoints = run_dir / "checkpoints"
    try:
        while newest_step(checkpoints) < after_step:
            if process.poll() is not None:
                tail = run.out.read_text()[-3000:]
                pytest.fail(
                    f"the run exited ({process.returncode}) before step {after_step}'s checkpoint:\n{tail}"
                )
            time.sleep(0.02)
        appeared = time.monotonic()
        while time.monotonic() < appeared + delay_s and newest_step(checkpoints, begun=True) == after_step:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        waited_s = time.monotonic() - appeared
        assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before the kill"
    finally:
        process.kill()
    mid_write = sorted(p.name for p in checkpoints.glob(".*.tmp-*"))
    found = resolve_last(checkpoints)
    assert found is not None
    checkpoint = torch.load(found, map_location="cpu", weights_only=True)
    step = int(checkpoint["global_step"])
    assert after_step <= step < STEPS, (found, step)
    return Kill(process.pid, after_step, waited_s, mid_write, found, step, checkpoint)


# ---------------------------------------------------------------- what runs logged


@dataclass
class Logged:
    """One process's TensorBoard records: (tag, step) -> values in order (a tag can repeat at a step)."""

    scalars: dict[tuple[str, int], list[float]]
    texts: dict[tuple[str, int], list[str]]

    def since(self, step: int) -> Logged:
        return Logged(
            {k: v for k, v in self.scalars.items() if k[1] >= step},
            {k: v for k, v in self.texts.items() if k[1] >= step},
        )


def event_files(tensorboard: Path) -> Iterator[tuple[int, Path]]:
    """``events.out.tfevents.<time>.<host>.<pid>.<n>`` files with the pid that wrote each."""
    for path in sorted(tensorboard.glob("events.out.tfevents.*")):
        yield int(path.name.rsplit(".", 2)[1]), path


def logged_by(tensorboard: Path, pid: int | None = None) -> Logged:
    """What the process ``pid`` (default: every process) wrote. A file cut off by the kill is read
    up to its last whole record."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    scalars: dict[tuple[str, int], list[float]] = defaultdict(list)
    texts: dict[tuple[str, int], list[str]] = defaultdict(list)
    files = [path for writer, path in event_files(tensorboard) if pid is None or writer == pid]
    # In writing order: creation time (whole seconds), then the writer's counter.
    files.sort(key=lambda p: (int(p.name.split(".")[3]), int(p.name.rsplit(".", 1)[1])))
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for event in events.Scalars(tag):
                scalars[(tag, event.step)].append(event.value)
        for tag in events.Tags()["tensors"]:
            for event in events.Tensors(tag):
                text = tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
                texts[(tag, event.step)].extend(t.decode() for t in text)
    return Logged(dict(scalars), dict(texts))


def scalar_differences(expected: Logged, got: Logged) -> tuple[list[str], bool]:
    """Mismatches (keys or values beyond float32 rounding) and whether all values are bitwise equal."""
    problems = [f"{key}: missing" for key in expected.scalars.keys() - got.scalars.keys()]
    problems += [f"{key}: not in the reference" for key in got.scalars.keys() - expected.scalars.keys()]
    bitwise = not problems
    for key in expected.scalars.keys() & got.scalars.keys():
        want, have = expected.scalars[key], got.scalars[key]
        bitwise &= want == have
        close = len(want) == len(have) and all(
            math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(want, have, strict=True)
        )
        if not close:
            problems.append(f"{key}: {have} != {want}")
    if expected.texts != got.texts:
        problems.append(
            f"text tables differ at {sorted(expected.texts.keys() ^ got.texts.keys())[:3]} or in content"
        )
        bitwise = False
    return sorted(problems), bitwise


def records_not_in(part: Logged, whole: Logged) -> list[str]:
    """Records of ``part`` that ``whole`` does not hold (at the same tag and step)."""
    wrong = [
        f"{key}: {values}"
        for key, values in part.scalars.items()
        if not all(v in whole.scalars.get(key, []) for v in values)
    ]
    wrong += [
        f"{key} (text)"
        for key, values in part.texts.items()
        if not all(v in whole.texts.get(key, []) for v in values)
    ]
    return wrong


def without_repeated_baselines(got: Logged, reference: Logged) -> Logged:
    """``got`` less the ``val/*_constant`` records that ``reference`` lacks at their step but holds,
    with the same value, at another. ConstantBaseline logs once per process (its ``done`` flag is not
    in checkpoints), so a resumed run logs the baseline again at its first validation: the same
    number, at a later step. Tolerated here, as a known extra; any other value fails."""
    kept = dict(got.scalars)
    for (tag, step), values in got.scalars.items():
        if tag.endswith("_constant") and (tag, step) not in reference.scalars:
            same = {v for (t, _), vs in reference.scalars.items() if t == tag for v in vs}
            assert set(values) <= same, f"{tag} at {step}: {values}, the reference logged {same}"
            del kept[(tag, step)]
    return Logged(kept, got.texts)


# ---------------------------------------------------------------- the checks


@dataclass
class Reference:
    run_dir: Path
    data_dir: Path


def reference(tmp_path_factory: pytest.TempPathFactory, overrides: list[str]) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    run = Reference(root / "run", root / "data")
    finish(start(run.run_dir, run.data_dir, overrides))
    return run


@pytest.fixture(scope="module")
def sft_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference(tmp_path_factory, SFT)


@pytest.fixture(scope="module")
def grpo_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference(tmp_path_factory, GRPO)


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    # last.ckpt of a finished run: written after the last step (weights do not change in validation).
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]


def kill_resume_and_compare(
    ref: Reference, tmp_path: Path, overrides: list[str], after_step: int, delay_s: float
) -> Kill:
    run_dir = tmp_path / "run"
    kill = run_and_kill(run_dir, ref.data_dir, overrides, after_step, delay_s)
    resumed = start(run_dir, ref.data_dir, overrides, resume=True)
    finish(resumed)

    expected, got = final_weights(ref.run_dir), final_weights(run_dir)
    assert expected.keys() == got.keys() and expected
    far = [n for n in expected if not torch.allclose(expected[n], got[n], rtol=1e-5, atol=1e-7)]
    assert not far, f"weights differ after the resume from {kill}: {far[:5]}"
    bitwise_weights = all(torch.equal(expected[n], got[n]) for n in expected)

    full = logged_by(ref.run_dir / "tensorboard")
    after = without_repeated_baselines(logged_by(run_dir / "tensorboard", resumed.process.pid), full)
    # train/* of the batch that makes step k is logged at step k - 1: the resumed run logs from k on.
    problems, bitwise_metrics = scalar_differences(
        full.since(kill.resume_step), after.since(kill.resume_step)
    )
    assert not problems, f"resumed from step {kill.resume_step} ({kill.resumed_from.name}): {problems[:8]}"
    assert any(tag.startswith("val/") for tag, step in after.scalars if step == STEPS - 1)  # final validation
    assert not records_not_in(after, full), records_not_in(after, full)[:5]  # nothing else, nothing different
    # What the killed process got to disk is the uninterrupted run's too.
    before = logged_by(run_dir / "tensorboard", kill.pid)
    assert not records_not_in(before, full), records_not_in(before, full)[:5]
    lost = sorted(
        {step for tag, step in full.scalars.keys() - before.scalars.keys() if step < kill.resume_step}
    )
    compared = after.since(kill.resume_step)
    print(
        f"\nkilled {kill.waited_s:.2f} s after step {kill.after_step}'s checkpoint (writing: "
        f"{kill.mid_write or 'nothing'}), resumed from {kill.resumed_from.name} (step {kill.resume_step}): "
        f"{len(expected)} weight tensors {'bitwise equal' if bitwise_weights else 'allclose'}; "
        f"{len(compared.scalars)} scalar (tag, step) and {len(compared.texts)} text records "
        f"{'bitwise equal' if bitwise_metrics else 'close'}; steps before the resume whose records the "
        f"kill lost (not yet flushed): {lost}"
    )
    return kill


@pytest.mark.slow
def test_sft_killed_at_a_random_step_resumes_exactly(sft_reference: Reference, tmp_path: Path) -> None:
    rng = random.Random(f"sft-{KILL_SEED}")
    after_step = rng.randint(1, STEPS - 1)  # killed before the next checkpoint: a step or more to redo
    kill_resume_and_compare(sft_reference, tmp_path, SFT, after_step, delay_s=rng.uniform(0.0, 1.5))


@pytest.mark.slow
def test_grpo_killed_inside_a_rollout_reuse_cycle_resumes_exactly(
    grpo_reference: Reference, tmp_path: Path
) -> None:
    rng = random.Random(f"grpo-{KILL_SEED}")
    after_step = rng.choice([1, 3, 5])  # after an odd step the buffered rollouts are still to reuse
    # The kill lands in last.ckpt's write, in the step that reuses the rollouts, or in the write of
    # that step's checkpoint (run_and_kill kills as soon as it begins).
    kill = kill_resume_and_compare(grpo_reference, tmp_path, GRPO, after_step, rng.uniform(0.0, 1.5))
    state = kill.checkpoint["grpo_step_state"]
    assert state["micro_step"] == kill.resume_step  # accumulate_grad_batches=1
    assert state["micro_step"] % 2 == 1 and set(state["buffer"]) == {0}, "not resumed mid-cycle"
