"""The image-level baselines on the default dataset, paired with a finished main run on the same test episodes.

    python -m benchmarks.image_baselines --main runs/headline/seed0 [--methods protonet,maml,fomaml,anil,metasgd]
                                         [--workdir runs/image_baselines] [--reuse]

Each method runs `python -m launch.main --config configs/baselines/<method>.py --workdir <workdir>/<method>`
(resumable): Conv-4 meta-trained from scratch on image episodes of the default dataset, scored on 100
validation episodes every 250 outer steps, stopped once 4 scores in a row have not beaten the best (or at
30,000 steps), and its best state on validation tested on the main job's 600 test episodes (the same seed
and list: the episode-list hashes are checked). Rows: accuracy +- 95% CI, the paired difference against
the main run's MetaDiff and against its strongest rival on validation, and the budget each used. Writes
benchmarks/results/image_baselines.json, image_baselines_per_episode.npz and its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

from benchmarks import report
from launch import compare, provenance
from metadiff_jax import evaluate

METHODS = ("protonet", "maml", "fomaml", "anil", "metasgd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", type=pathlib.Path, required=True, help="a finished main run of configs/default.py")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/image_baselines"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for every baseline run")
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    reused = provenance.check_finished_runs([args.main, *(args.workdir / method for method in args.methods.split(","))], args.reuse)
    main_results, main_accuracies = compare.load(args.main)
    rows, per_episode = [], {}
    for method in args.methods.split(","):
        workdir = args.workdir / method
        start = time.perf_counter()
        command = [sys.executable, "-m", "launch.main", "--config", f"configs/baselines/{method}.py", "--workdir", str(workdir)]
        command += [f"--config.dataset.data_dir={main_results['config']['dataset']['data_dir']}"] if main_results["config"]["dataset"]["data_dir"] else []
        command += [f"--config.{item}" for item in args.set]
        print("$ " + " ".join(command), flush=True)
        subprocess.run(command, cwd=report.ROOT, check=True)
        minutes = (time.perf_counter() - start) / 60
        results, accuracies = compare.load(workdir)
        for shots, digest in results["test_episodes_sha256"].items():
            if digest != main_results["test_episodes_sha256"][shots]:
                raise SystemExit(f"error: {workdir} was tested on other {shots}-shot episodes than {args.main}; use the same dataset and episodes settings.")
            values = accuracies[f"{method}_{shots}shot"]
            rival = main_results["paired_against"][shots]
            budget = json.loads((workdir / f"{method}_{shots}shot_validation.json").read_text())
            row = evaluate.summarize(method, values, results["config"]["episodes"]["ways"], int(shots), main_accuracies[f"metadiff_{shots}shot"]).row()
            versus_rival = evaluate.summarize(method, values, 5, int(shots), main_accuracies[f"{rival}_{shots}shot"]).row()
            rows.append(
                {
                    "method": method,
                    "shots": int(shots),
                    "episodes": row["episodes"],
                    "accuracy_percent": row["accuracy_percent"],
                    "ci95_percent": row["ci95_percent"],
                    "vs_metadiff_points": row["paired_diff_points"],
                    "vs_metadiff_ci95_points": row["paired_ci95_points"],
                    "rival": rival,
                    "vs_rival_points": versus_rival["paired_diff_points"],
                    "vs_rival_ci95_points": versus_rival["paired_ci95_points"],
                    "outer_steps_run": budget["steps_run"],
                    "best_step": budget["best_step"],
                    "meta_batch": results["config"]["baseline"]["meta_batch"],
                    "minutes_this_call": round(minutes, 1),
                }
            )
            per_episode[f"{method}_{shots}shot"] = values
            print(rows[-1], flush=True)
    report.publish(
        "image_baselines",
        rows,
        "Image-level baselines on the default dataset",
        f"`python -m benchmarks.image_baselines --main {args.main}" + "".join(f" --set {item}" for item in args.set) + "`. "
        f"Dataset {main_results['dataset']} (renders of KanjiVG glyph stroke data, not Omniglot or miniImageNet). Conv-4 from "
        "scratch on image episodes, Adam 1e-3 outside, 5 inner SGD steps at 0.4 (Meta-SGD: learned rates from 0.4), "
        "trained until validation accuracy stopped rising (100 validation episodes every 250 outer steps, patience 4) and "
        "tested at its best step on validation; test-time batch norm uses the query batch's statistics (transductive, as in "
        "MAML's paper). Paired per episode, on the same 600 test episodes, against the main run's MetaDiff and its strongest "
        "rival on validation. minutes_this_call counts only this call's work (0 when the run was finished earlier).",
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
