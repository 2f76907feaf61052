"""Side-by-side table of finished runs, paired per episode against a reference method.

    python -m launch.compare runs/default runs/maml runs/protonet [--reference metadiff]

Runs are paired only where they were evaluated on the same test episodes (the sha256 of each run's
episode list must match); the paired difference is mean +- 1.96 std / sqrt(n) of per-episode differences.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from metadiff_jax import evaluate


def load(workdir: pathlib.Path):
    results_path, accuracies_path = workdir / "results.json", workdir / "per_episode_accuracy.npz"
    if not results_path.exists() or not accuracies_path.exists():
        raise SystemExit(f"error: {workdir} holds no finished run (results.json and per_episode_accuracy.npz); run the main job there first.")
    results = json.loads(results_path.read_text())
    with np.load(accuracies_path) as data:
        return results, {key: data[key] for key in data.files}


def compare(workdirs: list[pathlib.Path], reference: str) -> str:
    per_episode, hashes, ways, datasets = {}, {}, {}, set()
    for workdir in workdirs:
        results, accuracies = load(workdir)
        datasets.add(results["dataset"])
        if len(datasets) > 1:
            # Episode-list hashes cover indices only: the same indices into another dataset are other images.
            raise SystemExit(
                f"error: {workdir} was made on {results['dataset']}, the runs before it on {sorted(datasets - {results['dataset']})[0]}; "
                "only runs on the same dataset can be paired."
            )
        for key, values in accuracies.items():
            method, shots = key.rsplit("_", 1)
            shots = int(shots.removesuffix("shot"))
            digest = results["test_episodes_sha256"][str(shots)]
            if shots in hashes and hashes[shots] != digest:
                raise SystemExit(
                    f"error: {workdir} was evaluated on other {shots}-shot test episodes than the runs before it "
                    "(episode-list sha256 differs); compare runs made with the same dataset, test_seed and test_episodes."
                )
            hashes[shots] = digest
            ways[shots] = results["config"]["episodes"]["ways"]
            per_episode[(method, shots)] = values
    results = []
    for (method, shots), values in sorted(per_episode.items(), key=lambda item: (item[0][1], item[0][0] != reference, item[0][0])):
        anchor = per_episode.get((reference, shots))
        results.append(evaluate.summarize(method, values, ways[shots], shots, None if method == reference or anchor is None else anchor))
    return evaluate.results_table(results, reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", type=pathlib.Path)
    parser.add_argument("--reference", default="metadiff", help="the method every other one is paired against")
    args = parser.parse_args()
    print(compare(args.workdirs, args.reference))


if __name__ == "__main__":
    sys.exit(main())
