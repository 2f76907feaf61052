"""Wall time of the main job from nothing: a fresh data folder (dataset build included) and a fresh workdir,
and, with --install, a fresh virtualenv into which the README's pip command installs everything first.

    python -m benchmarks.main_job [--config configs/quick.py] [--config configs/default.py] [--install]

Runs `python -m launch.main` as a user would, in temporary folders, and records its wall time, the time of
each stage (results.json's stage_seconds), the accuracies it reported, and this machine's float32 matmul rate
(the probe, measured just before: this VM's speed varies 2-3x from day to day). Budgets on a 2-core machine
as slow as a 148 GFLOP/s probe, pip and the dataset build included: quick <= 3 minutes, default <= 15.
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

from benchmarks import common, report

BUDGET_MINUTES = {"configs/quick.py": 3, "configs/default.py": 15}


def install_seconds(venv: pathlib.Path) -> tuple[float, str]:
    """A fresh virtualenv with README's install (pinned requirements, the package): (seconds, its python)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", "requirements.txt", "-e", "."], cwd=report.ROOT, check=True)
    return time.perf_counter() - start, python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", help="config files to time (default: quick and default)")
    parser.add_argument("--install", action="store_true", help="time README's pip install into a fresh virtualenv first, and run the job with it")
    args = parser.parse_args()
    rows, full_rows, stage_tables = [], [], []
    for config in args.config or list(BUDGET_MINUTES):
        with tempfile.TemporaryDirectory() as scratch:
            scratch = pathlib.Path(scratch)
            pip_seconds, python = install_seconds(scratch / "venv") if args.install else (0.0, sys.executable)
            probe = common.matmul_peak_gflops(1024)
            command = [
                python,
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
        stages = {f"{stage}_s": spent for stage, spent in results["stage_seconds"].items()}
        stage_tables.append(f"{config}: " + ", ".join(f"{stage} {spent:.0f} s" for stage, spent in results["stage_seconds"].items()))
        print(f"{config}: pip {pip_seconds:.0f} s, job {seconds:.0f} s, matmul probe {probe:.0f} GFLOP/s; stages: {stages}", flush=True)
        for result in results["results"]:
            shots = str(result["shots"])
            rows.append(
                {
                    "config": config,
                    "dataset": results["dataset"],
                    "minutes": round((pip_seconds + seconds) / 60, 2),
                    "pip_minutes": round(pip_seconds / 60, 2) if args.install else None,
                    "budget_minutes": BUDGET_MINUTES.get(config),
                    "matmul_probe_gflops": round(probe),
                    "method": result["method"],
                    "shots": result["shots"],
                    "accuracy_pct": round(100 * result["accuracy"], 2),
                    "ci95_pct": round(100 * result["ci95"], 2),
                    "rival": rival[shots],
                    "vs_rival_pts": None if result["paired_diff"] is None else round(100 * result["paired_diff"], 2),
                    "vs_rival_ci95_pts": None if result["paired_ci95"] is None else round(100 * result["paired_ci95"], 2),
                }
            )
            full_rows.append({**rows[-1], **stages})
            print(rows[-1], flush=True)
    report.publish(
        "main_job",
        rows,
        "The main job from nothing",
        "Wall time of `python -m launch.main --config CONFIG` with an empty data folder and workdir: dataset build, "
        "pretraining, feature cache, MetaDiff for 1 and 5 shots, evaluation. Accuracies are on renders of KanjiVG "
        "glyph stroke data (not Omniglot), 5-way, on the config's fixed test episodes, accuracy +- 95% CI; vs_rival: the "
        "paired per-episode difference against the non-diffusion row best on validation (`rival`, empty for itself). "
        "minutes includes pip's install into a fresh virtualenv where pip_minutes is filled (`--install`); "
        "matmul_probe_gflops is this machine's 1024^3 float32 matmul rate just before the run. Each stage's seconds "
        "(also in the json rows, `<stage>_s`):\n\n" + "\n".join(f"- {line}" for line in stage_tables),
        full_rows=full_rows,
    )


if __name__ == "__main__":
    main()
