"""The ablation suite: each entry of the registry configs/ablations.py sets a few keys of a finished main
run's config; the suite runs each change through the main job and pairs its per-episode accuracies with the
main run's.

    python -m launch.ablate --main runs/default --workdir runs/ablations            # every ablation
    python -m launch.ablate --main runs/default --workdir runs/ablations --only ema_off,sampler_ddim_10

Each ablation runs in <workdir>/<name> and reuses what the main run already made: its pretrained backbone
and feature cache always, and its trained denoisers when the ablation changes only how they are evaluated
(sampler, start, EMA). Finished ablations are skipped and a stopped one resumes, so rerunning the command
continues the suite; an ablation that changes nothing in the main run's config is skipped with a message.
A main run or finished ablation made by other code than today's (launch/provenance.py) is refused before
anything runs, unless --reuse; then it is used and listed in the outputs.
Writes <workdir>/ablations.md, ablations.json and ablations.png (paired differences against the main
configuration, mean +- 95% CI over the same test episodes).

An ablation is an entry of configs/ablations.py: a docstring and the `metadiff.*` keys it sets.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from launch import provenance

# Keys that change how a trained denoiser is evaluated, not the denoiser: ablations of only these reuse it.
EVALUATION_KEYS = {
    "metadiff.sampler.method", "metadiff.sampler.steps", "metadiff.sampler.start", "metadiff.sampler.draws", "metadiff.evaluate_ema", "metadiff.evaluate"
}


def available() -> list[str]:
    from configs import ablations

    return list(ablations.ABLATIONS)


def ablated_config(main_config, name: str):
    """The main config with ablation `name` applied, and the keys it changed (none: the main configuration)."""
    from configs import ablations
    from launch.errors import UsageError
    from metadiff_jax import config_dict

    config = main_config.copy_and_resolve_references()
    try:
        ablations.apply(config, ablations.ABLATIONS[name], main_config)
    except (KeyError, TypeError, ValueError) as error:
        raise UsageError(f"ablation {name} does not fit the main run's config: {error}") from error
    changed = config_dict.differing_keys(json.loads(main_config.to_json()), json.loads(config.to_json()))
    outside = [key for key in changed if not key.startswith("metadiff.")]
    if outside:
        raise UsageError(f"ablation {name} changes {', '.join(outside)}; an ablation changes metadiff.* keys only.")
    return config, changed


def link_shared_stages(main: pathlib.Path, workdir: pathlib.Path, changed: list[str], shots: list[int]) -> None:
    """Points the ablation's workdir at the main run's backbone, features and (when only evaluation changes)
    trained denoisers, so the pipeline finds those stages done."""
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    links = {workdir / "checkpoints" / "backbone": main / "checkpoints" / "backbone", workdir / "features": main / "features"}
    if set(changed) <= EVALUATION_KEYS:
        for k in shots:
            for suffix in ("", "_progress_best"):
                links[workdir / "checkpoints" / f"metadiff_{k}shot{suffix}"] = main / "checkpoints" / f"metadiff_{k}shot{suffix}"
            links[workdir / f"metadiff_{k}shot_losses.npy"] = main / f"metadiff_{k}shot_losses.npy"
    for link, target in links.items():
        if not link.exists() and target.exists():
            link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def table(main: pathlib.Path, workdir: pathlib.Path, names: list[str]) -> list[dict]:
    """Rows (ablation, shots, accuracy +- CI, paired difference against the main run's MetaDiff +- CI)."""
    from launch import compare
    from metadiff_jax import evaluate

    main_results, main_accuracies = compare.load(main)
    ways = main_results["config"]["episodes"]["ways"]
    rows = []
    for name in ["main", *names]:
        run_dir = main if name == "main" else workdir / name
        if not (run_dir / "results.json").exists():
            continue
        results, accuracies = compare.load(run_dir)
        for key, values in sorted(accuracies.items()):
            if not key.startswith("metadiff_"):
                continue
            shots = key.removeprefix("metadiff_").removesuffix("shot")
            if results["dataset"] != main_results["dataset"]:
                raise SystemExit(f"error: {run_dir} was made on {results['dataset']}, {main} on {main_results['dataset']}; they cannot be paired.")
            if results["test_episodes_sha256"][shots] != main_results["test_episodes_sha256"][shots]:
                raise SystemExit(f"error: {run_dir} was evaluated on other {shots}-shot test episodes than {main}; it cannot be paired.")
            result = evaluate.summarize(name, values, ways, int(shots), None if name == "main" else main_accuracies[key])
            rows.append({"ablation": name, **{k: v for k, v in result.row().items() if k != "method"}})
    return rows


def format_table(rows: list[dict]) -> str:
    from metadiff_jax import evaluate

    ordered = sorted(rows, key=lambda r: (r["shots"], r["ablation"] != "main", r["ablation"]))
    points = lambda value: None if value is None else value / 100
    results = [
        evaluate.MethodResult(
            r["ablation"],
            r["ways"],
            r["shots"],
            r["episodes"],
            *(points(r[k]) for k in ("accuracy_percent", "ci95_percent", "paired_diff_points", "paired_ci95_points")),
        )
        for r in ordered
    ]
    return evaluate.results_table(results, "main")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--main", type=pathlib.Path, required=True, help="a finished main run (python -m launch.main) to ablate")
    parser.add_argument("--workdir", type=pathlib.Path, required=True, help="where the ablations run and the table is written")
    parser.add_argument("--only", default="", help="comma-separated ablation names (default: every entry of configs/ablations.py)")
    provenance.add_reuse_argument(parser, help="use a main run or finished ablations made by other code than today's (listed in the outputs)")
    args = parser.parse_args(argv)
    from launch import pipeline, settings
    from launch.errors import UsageError
    from launch.signals import StopOnSignal, Stopped
    from launch.workdir import read_run_record
    from metadiff_jax import plots
    from metadiff_jax.checkpoints import CheckpointError
    from metadiff_jax.data.datasets import DatasetError
    from metadiff_jax.data.episodes import EpisodeError
    from metadiff_jax.loop import Preempted, TrainingDiverged

    known = available()
    names = [n for n in args.only.split(",") if n] or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"error: unknown ablation {', '.join(unknown)}; known: {', '.join(known)}.", file=sys.stderr)
        return 2
    main_config = read_run_record(args.main)
    if main_config is None or not all((args.main / name).exists() for name in ("results.json", "per_episode_accuracy.npz")):
        print(f"error: {args.main} holds no finished main run; run `python -m launch.main --workdir {args.main}` first.", file=sys.stderr)
        return 2
    if main_config.method != "metadiff":
        print(f"error: {args.main} is a {main_config.method} run; the ablations are of MetaDiff.", file=sys.stderr)
        return 2
    shots = list(settings.episode_specs(main_config))
    try:
        planned = {name: ablated_config(main_config, name) for name in names}
        # Before any training: the main run and the finished ablations are paired as they are.
        ran = [name for name in names if planned[name][1]]
        reused = provenance.check_runs([args.main, *(args.workdir / name for name in ran if (args.workdir / name / "results.json").exists())], args.reuse)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if reused:
        print(provenance.describe_reused(reused), flush=True)
    stopper = StopOnSignal()
    stopper.install()
    for position, name in enumerate(names, start=1):
        workdir = args.workdir / name
        config, changed = planned[name]
        if not changed:
            print(f"[ablation {position}/{len(names)}] {name}: skipped, the main run already has its settings", flush=True)
            continue
        if (workdir / "results.json").exists():
            print(f"[ablation {position}/{len(names)}] {name}: done earlier", flush=True)
            continue
        print(f"[ablation {position}/{len(names)}] {name}: {', '.join(changed)}", flush=True)
        # The rivals do not depend on MetaDiff's keys: the main run has them. Only prototypes stay, to pair with.
        config.rivals.rows = ()
        link_shared_stages(args.main, workdir, changed, shots)
        try:
            pipeline.run(config, workdir, stopper)
        except (Stopped, Preempted):
            print(f"stopped during ablation {name}; run the same command to resume.", file=sys.stderr)
            return 128 + stopper.signum
        except (UsageError, DatasetError, EpisodeError, TrainingDiverged, CheckpointError) as error:
            print(f"error in ablation {name}: {error}", file=sys.stderr)
            return 2
    rows = table(args.main, args.workdir, ran)
    text = format_table(rows) + ("\n\n" + provenance.describe_reused(reused) if reused else "")
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "ablations.md").write_text(text + "\n")
    (args.workdir / "ablations.json").write_text(json.dumps([{**row, "reused_runs": reused} for row in rows], indent=2))
    plots.paired_differences(rows, "Ablations against the main configuration").savefig(args.workdir / "ablations.png", dpi=110)
    print("\n" + text + f"\n\nWrote {args.workdir / 'ablations.md'}, ablations.json and ablations.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
