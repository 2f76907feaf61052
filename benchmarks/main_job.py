"""Wall time of the main job from nothing: a fresh data folder (dataset build included) and a fresh workdir.

    python -m benchmarks.main_job [--config configs/quick.py] [--config configs/default.py]

Runs `python -m launch.main` as a user would, in temporary folders, and records its wall time and the
accuracies it reported. Budgets on a 2-core machine: quick <= 3 minutes, default <= 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import report

BUDGET_MINUTES = {"configs/quick.py": 3, "configs/default.py": 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="config files to time (default: quick and default)")
    args = parser.parse_args()
    rows = []
    for config in args.config or list(BUDGET_MINUTES):
        with tempfile.TemporaryDirectory() as scratch:
            scratch = pathlib.Path(scratch)
            command = [
                sys.executable,
                "-m",
                "launch.main",
                "--config",
                config,
                "--workdir",
                str(scratch / "run"),
                f"--config.dataset.data_dir={scratch / 'data'}",
            ]
            start = time.perf_counter()
            subprocess.run(command, cwd=report.ROOT, check=True)
            seconds = time.perf_counter() - start
            results = json.loads((scratch / "run" / "results.json").read_text())
            # The printed table of this run, and the default's accuracy plot (docs/findings.md shows it), kept beside the rows.
            stem = report.ROOT / "benchmarks" / "results" / f"main_job_{pathlib.Path(config).stem}"
            shutil.copy(scratch / "run" / "results.md", f"{stem}_results.md")
            shutil.copy(scratch / "run" / "per_episode_accuracy.npz", f"{stem}_per_episode.npz")
            if config == "configs/default.py":
                shutil.copy(scratch / "run" / "plots" / "accuracy_per_step.png", f"{stem}_accuracy_per_step.png")
        rival = results["paired_against"]
        for result in results["results"]:
            shots = str(result["shots"])
            rows.append(
                {
                    "config": config,
                    "dataset": results["dataset"],
                    "minutes": round(seconds / 60, 2),
                    "budget_minutes": BUDGET_MINUTES.get(config),
                    "method": result["method"],
                    "shots": result["shots"],
                    "accuracy_pct": round(100 * result["accuracy"], 2),
                    "ci95_pct": round(100 * result["ci95"], 2),
                    "rival": rival[shots],
                    "vs_rival_pts": None if result["paired_diff"] is None else round(100 * result["paired_diff"], 2),
                    "vs_rival_ci95_pts": None if result["paired_ci95"] is None else round(100 * result["paired_ci95"], 2),
                }
            )
            print(rows[-1], flush=True)
    report.publish(
        "main_job",
        rows,
        "The main job from nothing",
        "Wall time of `python -m launch.main --config CONFIG` with an empty data folder and workdir: dataset build, "
        "pretraining, feature cache, MetaDiff for 1 and 5 shots, evaluation. Accuracies are on renders of KanjiVG "
        "glyph stroke data (not Omniglot), 5-way, on the config's fixed test episodes, accuracy +- 95% CI; vs_rival: the "
        "paired per-episode difference against the non-diffusion row best on validation (`rival`, empty for itself).",
    )


if __name__ == "__main__":
    main()
