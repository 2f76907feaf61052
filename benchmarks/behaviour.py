"""Behaviour preserved: the main job's per-episode test accuracies at this commit against a reference run.

    python -m benchmarks.behaviour [--config configs/default.py] [--reference benchmarks/results/behaviour_reference_default.npz]

Runs `python -m launch.main --config CONFIG` from an empty workdir (the dataset is rendered into
`--data_dir`, default a temporary folder) and compares every row's per-episode test accuracies with the
reference's, episode by episode: `identical` when every one of the 600 test episodes scores the same.
The reference is the same command's `per_episode_accuracy.npz` at an earlier commit (stored in it, with the
command), made on the same kind of machine: XLA's float32 arithmetic differs between CPUs, so a run on
another machine lands a few tenths of a point away (docs/running.md, "Determinism").
Writes benchmarks/results/behaviour.json and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--reference", type=pathlib.Path, default=report.ROOT / "benchmarks" / "results" / "behaviour_reference_default.npz")
    parser.add_argument("--data_dir", default="", help="tfds data folder (default: a temporary one, built from nothing)")
    args = parser.parse_args()
    with np.load(args.reference) as reference, tempfile.TemporaryDirectory() as scratch:
        made_at, command = str(reference["made_at_commit"]), str(reference["command"])
        expected = {key: reference[key] for key in reference.files if key not in ("made_at_commit", "command")}
        data_dir = args.data_dir or str(pathlib.Path(scratch) / "data")
        workdir = pathlib.Path(scratch) / "run"
        run = [sys.executable, "-m", "launch.main", "--config", args.config, "--workdir", str(workdir), f"--config.dataset.data_dir={data_dir}"]
        print("$ " + " ".join(run), flush=True)
        subprocess.run(run, cwd=report.ROOT, check=True)
        with np.load(workdir / "per_episode_accuracy.npz") as now:
            measured = {key: now[key] for key in now.files}
    rows = []
    for key in sorted(set(expected) | set(measured)):
        before, after = expected.get(key), measured.get(key)
        same_shape = before is not None and after is not None and before.shape == after.shape
        rows.append(
            {
                "config": args.config,
                "row": key,
                "episodes": None if after is None else len(after),
                "accuracy_percent": None if after is None else round(100 * float(after.mean()), 2),
                "reference_accuracy_percent": None if before is None else round(100 * float(before.mean()), 2),
                "episodes_differing": int(np.sum(before != after)) if same_shape else None,
                "identical": bool(same_shape and np.array_equal(before, after)),
                "reference_commit": made_at,
            }
        )
        print(rows[-1], flush=True)
    report.publish(
        "behaviour",
        rows,
        "Behaviour preserved: the main job's per-episode accuracies against a reference run",
        f"`python -m benchmarks.behaviour --config {args.config}`. The reference: `{command}` at commit {made_at}, on this "
        "project's 2-core machine (the same kind as this run's). Each row: the run's mean test accuracy, the reference's, and "
        "how many of its test episodes score differently (0 and `identical`: the same accuracy on every episode). Renders of "
        "KanjiVG glyph stroke data, not Omniglot or miniImageNet.",
    )


if __name__ == "__main__":
    main()
