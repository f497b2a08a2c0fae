"""Dataset statistics before training: class balance and episode lengths.

What the robot reward recipe's ``MODE=analyze`` printed. Usage::

    python -m vlmlab.tools.stats lerobot ROOT [--cameras KEY ...] [--num-classes N] [--plot out.png] [--json]

Prints the number of episodes, frames, classes and tasks; the class counts and fractions overall
and per task; frames per episode (min / mean / max) and a per-episode table (task, frames, final
class). Reads metadata and labels only (no pixels). Exits 1, printing ``PATH:ROW: field: problem``
lines, when the dataset cannot be read.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.figure
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vlmlab.data.errors import DataError
from vlmlab.data.lerobot import DEFAULT_CAMERAS, DEFAULT_REPO_ID, LeRobotFrames


def lerobot_stats(
    root: str | Path,
    cameras: Sequence[str] = DEFAULT_CAMERAS,
    num_classes: int | None = None,
    repo_id: str = DEFAULT_REPO_ID,
) -> dict[str, Any]:
    """Statistics of a local LeRobot reward dataset (raises DataError when its metadata is unusable).

    Returns a JSON-able dict: ``root``, ``num_episodes``, ``num_frames``, ``num_classes``, ``num_tasks``,
    ``invalid_frames`` (NaN/inf ``reward_bins``, a class >= num_classes, or no task: not counted in
    the class counts), ``class_counts`` / ``class_fractions`` (``[C]``, over valid frames),
    ``tasks`` (task -> ``episodes``, ``frames``, ``class_counts``, ``class_fractions``) and
    ``frames_per_episode`` (``min``, ``mean``, ``max``, and ``episodes``: one row per episode with
    ``episode_index``, ``task``, ``frames``, ``final_class``).
    """
    frames = LeRobotFrames(root, repo_id, cameras, num_classes)
    classes = frames.num_classes
    labels = frames.labels
    episodes = frames.columns["episode_index"].astype(np.int64)
    order = np.lexsort((frames.columns["frame_index"], episodes))  # episode-major, then frame order
    tasks = [frames.tasks.get(int(t)) for t in frames.columns["task_index"]]
    valid = (labels >= 0) & (labels < classes) & np.array([t is not None for t in tasks], dtype=bool)

    def counts(mask: np.ndarray) -> list[int]:
        return np.bincount(labels[mask & valid], minlength=classes)[:classes].tolist()

    def fractions(values: list[int]) -> list[float]:
        total = sum(values)
        return [v / total if total else 0.0 for v in values]

    per_task: dict[str, dict[str, Any]] = {}
    for task in sorted({t for t in tasks if t is not None}):
        mask = np.array([t == task for t in tasks], dtype=bool)
        task_counts = counts(mask)
        per_task[task] = {
            "episodes": len(set(episodes[mask].tolist())),
            "frames": int(mask.sum()),
            "class_counts": task_counts,
            "class_fractions": fractions(task_counts),
        }

    rows: dict[int, dict[str, Any]] = defaultdict(lambda: {"frames": 0, "tasks": []})
    for pos in order:
        row = rows[int(episodes[pos])]
        row["frames"] += 1
        task = tasks[pos] if tasks[pos] is not None else f"<task_index {frames.columns['task_index'][pos]}>"
        if task not in row["tasks"]:
            row["tasks"].append(task)
        row["final_class"] = (
            int(labels[pos]) if valid[pos] else None
        )  # the last frame's class, in frame order
    table = [
        {
            "episode_index": episode,
            "task": " | ".join(row["tasks"]),
            "frames": row["frames"],
            "final_class": row["final_class"],
        }
        for episode, row in sorted(rows.items())
    ]
    lengths = [row["frames"] for row in table]
    overall = counts(np.ones(len(labels), dtype=bool))
    return {
        "root": str(frames.root),
        "num_episodes": len(table),
        "num_frames": len(labels),
        "num_classes": classes,
        "num_tasks": len(per_task),
        "invalid_frames": int((~valid).sum()),
        "class_counts": overall,
        "class_fractions": fractions(overall),
        "tasks": per_task,
        "frames_per_episode": {
            "min": min(lengths, default=0),
            "mean": float(np.mean(lengths)) if lengths else 0.0,
            "max": max(lengths, default=0),
            "episodes": table,
        },
    }


def format_stats(stats: dict[str, Any]) -> str:
    """The report ``main`` prints: totals, class balance (overall and per task), episode lengths."""
    classes = stats["num_classes"]
    lines = [
        f"dataset: {stats['root']}",
        f"episodes: {stats['num_episodes']}  frames: {stats['num_frames']}  classes: {classes}  "
        f"tasks: {stats['num_tasks']}  invalid frames: {stats['invalid_frames']}",
        "",
        "class balance (count, fraction):",
    ]
    header = f"  {'task':<40} {'episodes':>8} {'frames':>7}  " + "  ".join(
        f"{'class ' + str(c):>14}" for c in range(classes)
    )
    lines.append(header)

    def row(name: str, episodes: object, frames: object, counts: list[int], fractions: list[float]) -> str:
        cells = "  ".join(f"{n:>6} ({f:6.1%})" for n, f in zip(counts, fractions, strict=True))
        return f"  {name[:40]:<40} {episodes!s:>8} {frames!s:>7}  {cells}"

    for task, entry in stats["tasks"].items():
        lines.append(
            row(task, entry["episodes"], entry["frames"], entry["class_counts"], entry["class_fractions"])
        )
    lines.append(
        row(
            "(all tasks)",
            stats["num_episodes"],
            stats["num_frames"],
            stats["class_counts"],
            stats["class_fractions"],
        )
    )
    lengths = stats["frames_per_episode"]
    lines += [
        "",
        f"frames per episode: min {lengths['min']}  mean {lengths['mean']:.1f}  max {lengths['max']}",
        f"  {'episode':>7} {'frames':>7} {'final class':>11}  task",
    ]
    for entry in lengths["episodes"]:
        final = "-" if entry["final_class"] is None else entry["final_class"]
        lines.append(f"  {entry['episode_index']:>7} {entry['frames']:>7} {final!s:>11}  {entry['task']}")
    return "\n".join(lines)


def plot_stats(stats: dict[str, Any], out: str | Path) -> Path:
    """A grouped bar chart of class fractions per task (and over all tasks), saved as a PNG."""
    groups = {
        **{t: e["class_fractions"] for t, e in stats["tasks"].items()},
        "(all tasks)": stats["class_fractions"],
    }
    classes = stats["num_classes"]
    width = 0.8 / max(1, len(groups))
    # An Agg canvas on a pyplot-free Figure: no display and no global figure registry.
    figure = matplotlib.figure.Figure(figsize=(max(6.0, 1.2 * classes + 2), 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    x = np.arange(classes)
    for i, (name, values) in enumerate(groups.items()):
        axes.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=name[:40])
    axes.set_xticks(x, [str(c) for c in range(classes)])
    axes.set_xlabel("class")
    axes.set_ylabel("fraction of the task's frames")
    axes.set_title(f"class balance: {stats['num_episodes']} episodes, {stats['num_frames']} frames")
    axes.legend(fontsize=7)
    figure.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vlmlab.tools.stats", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="format", required=True)
    lerobot = sub.add_parser("lerobot", help="LeRobot reward dataset: class balance and episode lengths")
    lerobot.add_argument("root", type=Path, help="the dataset folder (holds meta/info.json)")
    lerobot.add_argument(
        "--cameras", nargs="+", default=list(DEFAULT_CAMERAS), help="camera feature keys the data must have"
    )
    lerobot.add_argument("--num-classes", type=int, default=None, help="default: len(reward_bins)")
    lerobot.add_argument(
        "--repo-id", default=DEFAULT_REPO_ID, help="lerobot's name for it (never downloaded)"
    )
    lerobot.add_argument("--plot", type=Path, default=None, help="write a class-balance bar chart (PNG)")
    lerobot.add_argument("--json", action="store_true", help="print the statistics as JSON instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats = lerobot_stats(args.root, args.cameras, args.num_classes, args.repo_id)
    except DataError as error:
        for problem in error.problems:
            print(problem)
        return 1
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    if args.plot is not None:
        print(f"plot: {plot_stats(stats, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
