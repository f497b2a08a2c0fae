"""What a run learned, read back from its TensorBoard events: before, after and the constant answer.

Usage::

    python -m vlmlab.tools.results RUN_DIR [RUN_DIR ...] [--metric val/mcqa/accuracy] [--json]

One Markdown row per run (the README's results table): the validation metric at its first logged
step (step 0 when ``validate_before_training``), at its last, the logged constant-answer baseline
(``<metric>_constant``), the margin of the last value over that baseline, and for GRPO runs the mean
``train/reward/total`` over the first and the last fifth of the steps. Without ``--metric`` the run's
metric is the one its ``_constant`` baseline names (the least nested, e.g. the overall accuracy rather than
a per-dataset one, when there are several).
Exits 1 naming the run and the tag when a run lacks what is asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["RunResult", "fifth_means", "markdown", "read_scalars", "summarise"]

CONSTANT_SUFFIX = "_constant"
REWARD_TAG = "train/reward/total"

Series = list[tuple[int, float]]  # (global step, value), in step order


@dataclass(frozen=True)
class RunResult:
    """A run's metric before and after training, its constant-answer baseline, and its reward trend."""

    run: str
    metric: str
    first_step: int
    first: float
    last_step: int
    last: float
    constant: float | None
    reward_first_fifth: float | None
    reward_last_fifth: float | None

    @property
    def margin(self) -> float | None:
        """last - constant: how far the trained model beats the best input-independent answer."""
        return None if self.constant is None else self.last - self.constant


def fifth_means(values: Sequence[float]) -> tuple[float, float]:
    """(mean of the first fifth, mean of the last fifth) of ``values`` (at least one value each)."""
    if not values:
        raise ValueError("no values")
    fifth = max(1, len(values) // 5)
    return sum(values[:fifth]) / fifth, sum(values[-fifth:]) / fifth


def summarise(run: str, scalars: Mapping[str, Series], metric: str | None = None) -> RunResult:
    """The :class:`RunResult` of one run's scalars ``{tag: [(step, value), ...]}``. Raises KeyError naming
    the missing tag."""
    if metric is None:
        baselines = [tag for tag in scalars if tag.endswith(CONSTANT_SUFFIX)]
        if not baselines:
            raise KeyError(f"{run}: no */*{CONSTANT_SUFFIX} scalar; pass --metric")
        metric = min(baselines, key=lambda tag: (tag.count("/"), tag)).removesuffix(CONSTANT_SUFFIX)
    if not scalars.get(metric):
        raise KeyError(
            f"{run}: no scalar {metric!r} (has {sorted(t for t in scalars if t.startswith('val/'))})"
        )
    series = sorted(scalars[metric])
    constant = scalars.get(metric + CONSTANT_SUFFIX)
    rewards = [value for _, value in sorted(scalars.get(REWARD_TAG, []))]
    reward_first, reward_last = fifth_means(rewards) if rewards else (None, None)
    return RunResult(
        run=run,
        metric=metric,
        first_step=series[0][0],
        first=series[0][1],
        last_step=series[-1][0],
        last=series[-1][1],
        constant=constant[-1][1] if constant else None,
        reward_first_fifth=reward_first,
        reward_last_fifth=reward_last,
    )


def read_scalars(run_dir: str | Path) -> dict[str, Series]:
    """Every scalar of a run's ``tensorboard/`` events (all versions), ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    folder = Path(run_dir) / "tensorboard"
    if not folder.is_dir():
        raise FileNotFoundError(f"{run_dir}: no tensorboard/ folder (is it a run folder of train.py?)")
    multiplexer = EventMultiplexer(size_guidance={"scalars": 0}).AddRunsFromDirectory(str(folder))
    multiplexer.Reload()
    scalars: dict[str, Series] = {}
    for name, tags in multiplexer.Runs().items():
        for tag in tags.get("scalars", []):
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in multiplexer.Scalars(name, tag))
    return scalars


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def markdown(results: Sequence[RunResult]) -> str:
    """A Markdown table of ``results``, one row per run."""
    lines = [
        "| run | metric | step 0 | final (step) | constant | margin | reward first / last fifth |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reward = (
            "" if r.reward_first_fifth is None else f"{r.reward_first_fifth:.3f} / {r.reward_last_fifth:.3f}"
        )
        margin = "" if r.margin is None else f"{r.margin:+.3f}"
        lines.append(
            f"| {r.run} | {r.metric} | {_number(r.first)} | {_number(r.last)} ({r.last_step}) "
            f"| {_number(r.constant)} | {margin} | {reward} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlmlab.tools.results", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="run folders (logs/<task>/runs/<time>)")
    parser.add_argument(
        "--metric", help="validation scalar, e.g. val/mcqa/accuracy (default: the baselined one)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    try:
        results = [summarise(str(run), read_scalars(run), args.metric) for run in args.runs]
    except (KeyError, FileNotFoundError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 1
    if args.json:
        for r in results:
            print(json.dumps({**asdict(r), "margin": r.margin}))
    else:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
