"""The image-level learners on the default dataset, paired with a finished main run on the same test episodes.

    python -m benchmarks.image_baselines --main runs/comparison/seed0 [--learners maml,anil:5]
                                         [--workdir runs/image_baselines] [--data_dir DIR] [--reuse]

Each (learner, shots) is `python -m launch.main --config configs/baselines/<method>.py --workdir
<workdir>/<method>_<shots>shot --config.episodes.shots=(<shots>,)`, resumable, and not run again once its folder
holds results.json: Conv-4 meta-trained from scratch on image episodes of the default dataset, scored on 100
validation episodes every 250 outer steps, stopped once 4 scores in a row have not beaten the best (or at
30,000 steps), and its best state on validation tested on the main job's 600 test episodes (the same seed
and list: the episode-list hashes are checked). Rows: accuracy +- 95% CI, the paired difference against
the main run's MetaDiff and against its strongest rival on validation, and the budget each used. Writes
benchmarks/results/image_baselines.json, image_baselines_per_episode.npz and its BENCHMARKS.md section.

The folders are laid out as `python -m benchmarks.device --parts image_learners` lays out a GPU's: with
`--workdir runs/device_image_learners --data_dir .device/data` this finishes here the runs a lent GPU
returned (device_learner_runs.tgz.*, joined and unpacked) and pairs them.
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
from launch import report as launch_report
from metadiff_jax import evaluate

LEARNERS = ("protonet", "maml", "fomaml", "anil", "metasgd")


def parse_learners(text: str) -> list[tuple[str, int]]:
    """"maml:1,metasgd" -> [("maml", 1), ("metasgd", 1), ("metasgd", 5)]: a learner without shots runs both."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        method, _, shots = item.partition(":")
        if method not in LEARNERS or shots not in ("", "1", "5"):
            raise ValueError(f"unknown learner run {item!r}: give METHOD or METHOD:SHOTS, METHOD one of {', '.join(LEARNERS)}, SHOTS 1 or 5")
        runs += [(method, int(count)) for count in ([shots] if shots else ("1", "5")) if (method, int(count)) not in runs]
    if not runs:
        raise ValueError("the learners name no run")
    return runs


def run_folder(root: pathlib.Path, method: str, shots: int) -> pathlib.Path:
    return root / f"{method}_{shots}shot"


def learner_command(method: str, shots: int, workdir: pathlib.Path, overrides: list[str]) -> list[str]:
    """The main job's command for one learner at one shot count (its shots are drawn from the seed and the
    shot count alone, so one shot count per process gives the same run as both in one)."""
    command = [sys.executable, "-m", "launch.main", "--config", f"configs/baselines/{method}.py", "--workdir", str(workdir)]
    return [*command, *overrides, f"--config.episodes.shots=({shots},)"]


def trained_by(record: dict) -> str:
    """The processes that trained a run, from its validation record: "steps A-B at COMMIT in M min; ...";
    records written before they listed processes say "not recorded"."""
    processes = record.get("processes", [])
    if not processes:
        return provenance.NOT_RECORDED
    def described(process: dict) -> str:
        code = " (commit not recorded)" if process["commit"] == provenance.NOT_RECORDED else f" at {process['commit']}"
        return f"steps {process['from_step']}-{process['to_step']}{code}" + ("" if process["minutes"] is None else f" in {process['minutes']} min")

    return "; ".join(described(process) for process in processes)


def paired_row(method: str, shots: int, workdir: pathlib.Path, main: pathlib.Path) -> tuple[dict, object]:
    """A finished learner's row, paired per episode with the main run's MetaDiff and its strongest rival on
    validation, and its per-episode accuracies; refused when the two were tested on other episodes."""
    (results, accuracies), (main_results, main_accuracies) = compare.load(workdir), compare.load(main)
    if results["test_episodes_sha256"][str(shots)] != main_results["test_episodes_sha256"][str(shots)]:
        raise SystemExit(f"error: {workdir} was tested on other {shots}-shot episodes than {main}; use the same dataset and episodes settings.")
    values, ways = accuracies[f"{method}_{shots}shot"], results["config"]["episodes"]["ways"]
    rival = main_results["paired_against"][str(shots)]
    budget = json.loads((workdir / f"{method}_{shots}shot_validation.json").read_text())
    versus_metadiff = evaluate.summarize(method, values, ways, shots, main_accuracies[f"metadiff_{shots}shot"]).row()
    versus_rival = evaluate.summarize(method, values, ways, shots, main_accuracies[f"{rival}_{shots}shot"]).row()
    row = {
        "method": method,
        "shots": shots,
        "episodes": versus_metadiff["episodes"],
        "accuracy_percent": versus_metadiff["accuracy_percent"],
        "ci95_percent": versus_metadiff["ci95_percent"],
        "vs_metadiff_points": versus_metadiff["paired_diff_points"],
        "vs_metadiff_ci95_points": versus_metadiff["paired_ci95_points"],
        "rival": rival,
        "vs_rival_points": versus_rival["paired_diff_points"],
        "vs_rival_ci95_points": versus_rival["paired_ci95_points"],
        "outer_steps_run": budget["steps_run"],
        "best_step": budget["best_step"],
        "meta_batch": results["config"]["baseline"]["meta_batch"],
        # Wall minutes of meta-training in the process that finished the run (a resumed run: its last process).
        "training_minutes": round(results["stage_seconds"][launch_report.stage_name(method, shots)] / 60, 1),
        "trained_by": trained_by(budget),
    }
    return row, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", type=pathlib.Path, required=True, help="a finished main run of configs/default.py")
    parser.add_argument("--learners", default=",".join(LEARNERS), help="comma-separated METHOD or METHOD:SHOTS (a METHOD alone: 1 and 5 shots)")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/image_baselines"))
    parser.add_argument("--data_dir", help="the tfds folder of the default dataset (default: the main run's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for every baseline run")
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    try:
        runs = parse_learners(args.learners)
    except ValueError as error:
        parser.error(str(error))
    folders = {run: run_folder(args.workdir, *run) for run in runs}
    reused = provenance.check_finished_runs([args.main, *folders.values()], args.reuse)
    main_results, _ = compare.load(args.main)
    data_dir = args.data_dir or main_results["config"]["dataset"]["data_dir"]
    overrides = [*([f"--config.dataset.data_dir={data_dir}"] if data_dir else []), *(f"--config.{item}" for item in args.set)]
    rows, per_episode = [], {}
    for (method, shots), workdir in folders.items():
        start = time.perf_counter()
        if not (workdir / "results.json").exists():
            command = learner_command(method, shots, workdir, overrides)
            print("$ " + " ".join(command), flush=True)
            subprocess.run(command, cwd=report.ROOT, check=True)
        row, per_episode[f"{method}_{shots}shot"] = paired_row(method, shots, workdir, args.main)
        rows.append({**row, "minutes_this_call": round((time.perf_counter() - start) / 60, 1)})
        print(rows[-1], flush=True)
    report.publish(
        "image_baselines",
        rows,
        "Image-level baselines on the default dataset",
        f"`python -m benchmarks.image_baselines --main {args.main} --learners {args.learners} --workdir {args.workdir}"
        + (f" --data_dir {args.data_dir}" if args.data_dir else "")
        + "".join(f" --set {item}" for item in args.set)
        + (" --reuse" if args.reuse else "")
        + "`. "
        f"Dataset {main_results['dataset']} (renders of KanjiVG glyph stroke data, not Omniglot or miniImageNet). Conv-4 from "
        "scratch on image episodes, Adam 1e-3 outside, 5 inner SGD steps at 0.4 (Meta-SGD: learned rates from 0.4), "
        "trained until validation accuracy stopped rising (100 validation episodes every 250 outer steps, patience 4) and "
        "tested at its best step on validation; test-time batch norm uses the query batch's statistics (transductive, as in "
        "MAML's paper). Paired per episode, on the same 600 test episodes, against the main run's MetaDiff and its strongest "
        "rival on validation. training_minutes: wall minutes of meta-training in the process that finished the run (its "
        "last, when resumed); trained_by: each process that trained it, its steps, commit and wall minutes; "
        "minutes_this_call counts only this call's work (0 when the run was finished earlier).",
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
