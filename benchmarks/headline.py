"""The headline table: every feature-level row of the main job over several seeds, per seed and pooled.

    python -m benchmarks.headline [--seeds 0,1,2,3,4] [--variants published,learning_rate_1e5,...,learning_rate_1e2]
        [--config configs/comparison.py] [--workdir runs/comparison] [--reuse]

The defaults are the comparison of docs/findings.md: configs/comparison.py (every learned row's learning rate
searched, one early-stopping rule for all) over 5 seeds, beside MetaDiff as published and MetaDiff's own
learning-rate grid. For each seed S this runs the main job (`<config> --config.seed=S`) in <workdir>/seed<S>, then
each variant (an entry of configs/ablations.py, run by `launch.ablate` against that seed's main run, on its
backbone and features) in <workdir>/seed<S>_variants. The seed changes the backbone's pretraining, the
rivals' draws and meta-training, and the denoisers' initialisation and episode stream; the 600 test
episodes are the same for every seed (episodes.test_seed). Everything resumes: rerunning continues.

Every hyperparameter is chosen on validation episodes inside the main job (its results.json records each
choice); the strongest rival of a seed is the non-diffusion row best on validation, and the pooled
strongest rival the one with the best mean validation accuracy over seeds. Pooled rows average each test
episode's accuracy over the seeds, then give mean +- 1.96 std / sqrt(episodes) over episodes; paired
differences likewise, per episode, and beside each the per-seed differences and a t-interval over the seed
means (seed_level_difference: the interval a conclusion about the method follows). Writes
benchmarks/results/headline.json (rows, with the commit and command), headline_per_episode.npz (every
per-episode accuracy) and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import scipy.stats

from benchmarks import report
from launch import compare, provenance
from launch.errors import UsageError
from metadiff_jax import evaluate


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=report.ROOT, check=True)


def seed_rows(seed: int, results: dict, accuracies: dict, variants: dict[str, dict]) -> tuple[list[dict], dict, dict]:
    """One seed's rows (every method and shot count, each paired against that seed's strongest rival), its
    per-episode accuracies keyed "<method>_<K>shot", and its choices on validation per shot count."""
    per_episode = dict(accuracies)
    selected = json.loads(json.dumps(results["selected_on_validation"]))
    for name, (variant_results, variant_accuracies) in variants.items():
        for shots in results["paired_against"]:
            if variant_results["test_episodes_sha256"][shots] != results["test_episodes_sha256"][shots]:
                raise SystemExit(f"error: variant {name} of seed {seed} was tested on other {shots}-shot episodes.")
            per_episode[f"metadiff_{name}_{shots}shot"] = variant_accuracies[f"metadiff_{shots}shot"]
            selected[shots][f"metadiff_{name}"] = variant_results["selected_on_validation"][shots]["metadiff"]
    if variants:
        # MetaDiff as one would run it: of the default and its variants, the one best on validation.
        for shots, chosen in selected.items():
            candidates = {m: c["validation_accuracy"] for m, c in chosen.items() if m.startswith("metadiff")}
            best = max(candidates, key=candidates.get)
            per_episode[f"metadiff_chosen_on_validation_{shots}shot"] = per_episode[f"{best}_{shots}shot"]
            chosen["metadiff_chosen_on_validation"] = {"choice": {"variant": best}, "validation_accuracy": candidates[best]}
    rows = []
    ways = results["config"]["episodes"]["ways"]
    for key, values in per_episode.items():
        method, shots = key.rsplit("_", 1)
        shots = shots.removesuffix("shot")
        rival = results["paired_against"][shots]
        reference = None if method == rival else per_episode[f"{rival}_{shots}shot"]
        row = {"seed": seed, **evaluate.summarize(method, values, ways, int(shots), reference).row(), "paired_against": rival}
        chosen = selected[shots].get(method)
        row["validation_percent"] = None if chosen is None else round(100 * chosen["validation_accuracy"], 2)
        row["choice"] = None if chosen is None else chosen["choice"]
        rows.append(row)
    return rows, per_episode, selected


def pooled_rows(per_seed: dict[int, dict], selected: dict[int, dict], ways: int) -> list[dict]:
    """Rows over all seeds: each episode's accuracy averaged over seeds; paired against the pooled rival."""
    first = next(iter(per_seed.values()))
    keys = [key for key in first if all(key in p for p in per_seed.values())]
    rows = []
    for shots in sorted({key.rsplit("_", 1)[1].removesuffix("shot") for key in keys}, key=int):
        validation = {}
        for chosen in selected.values():
            for method, value in chosen[shots].items():
                validation.setdefault(method, []).append(value["validation_accuracy"])
        rivals = {m: np.mean(v) for m, v in validation.items() if not m.startswith("metadiff")}
        rival = max(rivals, key=rivals.get)
        mean_over_seeds = {key: np.mean([p[key] for p in per_seed.values()], axis=0) for key in keys if key.endswith(f"_{shots}shot")}
        for key, values in mean_over_seeds.items():
            method = key.rsplit("_", 1)[0]
            reference = None if method == rival else mean_over_seeds[f"{rival}_{shots}shot"]
            row = {"seed": "pooled", **evaluate.summarize(method, values, ways, int(shots), reference).row(), "paired_against": rival}
            row["validation_percent"] = round(100 * float(np.mean(validation[method])), 2) if method in validation else None
            row["seeds"] = len(per_seed)
            if reference is not None:
                row.update(seed_level_difference([p[key] - p[f"{rival}_{shots}shot"] for p in per_seed.values()]))
            rows.append(row)
    return rows


def seed_level_difference(differences: list[np.ndarray]) -> dict:
    """The paired difference with the seeds, not the episodes, as the sample: each seed's mean difference over
    the test episodes, and a Student t-interval over those means (t at 0.975 with seeds - 1 degrees of freedom).

    The pooled per-episode interval treats the trained models as fixed; this one asks what another seed's
    backbone and training would give, and is the one a conclusion about the method should follow."""
    means = np.array([np.mean(d) for d in differences], np.float64)
    half_width = None
    if len(means) > 1:
        half_width = round(100 * float(scipy.stats.t.ppf(0.975, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))), 2)
    return {"per_seed_diff_points": [round(100 * float(m), 2) for m in means], "seed_t_ci95_points": half_width}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    variants = "published," + ",".join(f"learning_rate_{name}" for name in ("1e5", "3e5", "3e4", "1e3", "3e3", "1e2"))
    parser.add_argument("--variants", default=variants, help="comma-separated entries of configs/ablations.py to run beside the main run")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/comparison"))
    parser.add_argument("--config", default="configs/comparison.py")
    parser.add_argument("--data_dir", default="", help="tfds data folder (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for every run, e.g. rivals.anil.steps=100")
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variant_names = [v for v in args.variants.split(",") if v]

    def foreign_runs(of_seeds: list[int]) -> list[dict]:
        """The finished main runs and variants of these seeds made by other code: refused unless --reuse."""
        runs = [path for seed in of_seeds for path in (args.workdir / f"seed{seed}", *(args.workdir / f"seed{seed}_variants" / name for name in variant_names))]
        try:
            return provenance.check_runs([path for path in runs if (path / "results.json").exists()], args.reuse)
        except UsageError as error:
            raise SystemExit(f"error: {error}") from None

    foreign_runs(seeds)  # before any training, since finished runs are reused as they are
    rows, per_seed, selected, reused = [], {}, {}, []
    for seed in seeds:
        main_dir = args.workdir / f"seed{seed}"
        extra = ([f"--config.dataset.data_dir={args.data_dir}"] if args.data_dir else []) + [f"--config.{item}" for item in args.set]
        if (main_dir / "results.json").exists():
            print(f"{main_dir}: finished earlier", flush=True)  # rerunning would only repeat it (and retrain ANIL)
        else:
            run([sys.executable, "-m", "launch.main", "--config", args.config, "--workdir", str(main_dir), f"--config.seed={seed}", *extra])
        variants = {}
        if variant_names:
            variant_dir = args.workdir / f"seed{seed}_variants"
            suite = ["--main", str(main_dir), "--workdir", str(variant_dir), "--only", ",".join(variant_names), *(["--reuse"] if args.reuse else [])]
            run([sys.executable, "-m", "launch.ablate", *suite])
            # A variant that changes nothing in this main run is skipped by the suite, and has no row of its own.
            variants = {name: compare.load(variant_dir / name) for name in variant_names if (variant_dir / name / "results.json").exists()}
        reused += foreign_runs([seed])  # again as they are aggregated: the code may have changed while this command ran
        results, accuracies = compare.load(main_dir)
        seed_table, per_seed[seed], selected[seed] = seed_rows(seed, results, accuracies, variants)
        rows += seed_table
        ways = results["config"]["episodes"]["ways"]
        dataset = results["dataset"]
    rows += pooled_rows(per_seed, selected, ways)
    if reused:
        print(provenance.describe_reused(reused), flush=True)
    table_rows = [{k: v for k, v in row.items() if k != "choice"} for row in rows]
    report.publish(
        "headline",
        table_rows,
        "Headline: every feature-level row over seeds",
        f"`python -m benchmarks.headline --seeds {args.seeds}" + (f" --variants {args.variants}" if variant_names else "")
        + "".join(f" --set {item}" for item in args.set) + (f" --config {args.config}" if args.config != "configs/default.py" else "") + "`. "
        f"Dataset {dataset} (renders of KanjiVG glyph stroke data, not Omniglot or miniImageNet); {ways}-way, the same 600 test "
        "episodes for every seed and row, 15 queries a class. Per seed: accuracy +- 95% CI over episodes, paired difference "
        "against that seed's strongest non-diffusion row on validation (`paired_against`), validation accuracy where the row's "
        "settings were chosen. Pooled: each episode's accuracy averaged over the seeds first. Choices per seed: "
        "benchmarks/results/headline.json; per-episode accuracies: benchmarks/results/headline_per_episode.npz.",
        reused=reused,
        per_episode={f"seed{s}/{k}": v for s, p in per_seed.items() for k, v in p.items()},
    )


if __name__ == "__main__":
    main()
