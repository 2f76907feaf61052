"""How much room a per-class estimate of the class mean has on the default dataset's features, and where it is.

    python -m benchmarks.headroom [--seeds 0,1,2] [--workdir runs/headline] [--episodes 600] [--reuse]

Needs `python -m benchmarks.headline` done for those seeds (it reads each seed's cached features, scaled as
the run scaled them, and the ridge strength the run chose on validation). MetaDiff's denoiser, like the ridge
map, turns one class's support examples into that class's classifier weights. This asks what such a map could
gain and where the gain would have to come from, on 600 episodes of the BASE classes (the backbone and every
learner were trained on them) and 600 of the VALIDATION classes (new, as test classes are; test episodes
are never read here):
- prototypes: the support mean, the floor every row starts from;
- class means: each class's mean over all its renders, the weights a perfect estimator would return (the
  ceiling of any map from the support set to class weights);
- ridge: the run's ridge map fit on base-class prototypes (what a linear map learns from the base classes);
- robust estimates of the mean (coordinate median, geometric median, mean of unit-norm features, the mean
  without the example farthest from it): if the support set held outliers or heavy tails, one of these
  beats its mean, and a denoiser that sees the support examples would have something to learn.
Each row is paired per episode against prototypes. Spread rows give each split's mean squared distance of
an example to its class mean (within) and of a class mean to the split's mean (between): whether the
backbone separates the classes it was trained on more widely than new ones, in which case what a learner
learns about where base classes sit would mislead it on new classes. Writes benchmarks/results/headroom.json, headroom_per_episode.npz and
its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from benchmarks import report
from benchmarks.memorization import split_features
from launch import provenance, settings
from launch.workdir import read_run_record
from metadiff_jax import diffusion, evaluate, rivals
from metadiff_jax.data import episodes
from metadiff_jax.data.split import ClassIndexedSplit

EPISODE_SEED = 7  # the episodes of benchmarks.memorization


def class_means(split: ClassIndexedSplit) -> np.ndarray:
    """`(classes, d)`: each class's mean feature over all its examples (MetaDiff's class-mean targets)."""
    return diffusion.class_mean_targets(split.images, split.class_starts)


def spread(split: ClassIndexedSplit) -> dict:
    """Mean squared distance of an example to its class mean (within) and of a class mean to their mean (between)."""
    means = class_means(split)
    labels = np.repeat(np.arange(split.num_classes), split.class_sizes)
    within = float(np.mean(np.sum((np.asarray(split.images, np.float64) - means[labels]) ** 2, axis=-1)))
    between = float(np.mean(np.sum((means - means.mean(axis=0)) ** 2, axis=-1)))
    return {"within_class_sq_dist": round(within, 3), "between_class_sq_dist": round(between, 3), "within_over_between": round(within / between, 3)}


def support_by_class(support_features, support_labels, ways: int) -> np.ndarray:
    """`(E, n, d), (E, n)` -> `(E, ways, shots, d)`: each class's support examples (every class has `shots`)."""
    order = np.argsort(support_labels, axis=-1, kind="stable")
    grouped = np.take_along_axis(np.asarray(support_features, np.float64), order[..., None], axis=1)
    return grouped.reshape(grouped.shape[0], ways, -1, grouped.shape[-1])


def geometric_median(points: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weiszfeld's iterations over the second-to-last axis: `(..., n, d)` -> `(..., d)`."""
    median = points.mean(axis=-2)
    for _ in range(iterations):
        weights = 1.0 / np.maximum(np.linalg.norm(points - median[..., None, :], axis=-1), 1e-8)
        median = np.sum(weights[..., None] * points, axis=-2) / np.sum(weights, axis=-1, keepdims=True)
    return median


def without_farthest(points: np.ndarray) -> np.ndarray:
    """`(..., n, d)` -> `(..., d)`: the mean of the n - 1 points nearest to the mean of all n."""
    distance = np.linalg.norm(points - points.mean(axis=-2, keepdims=True), axis=-1)
    keep = distance < distance.max(axis=-1, keepdims=True)
    return np.sum(keep[..., None] * points, axis=-2) / np.sum(keep, axis=-1, keepdims=True)


ROBUST = {
    "coordinate median": lambda grouped: np.median(grouped, axis=-2),
    "geometric median": geometric_median,
    "mean of unit-norm features": lambda grouped: (grouped / np.linalg.norm(grouped, axis=-1, keepdims=True)).mean(axis=-2),
    "mean without the farthest example": without_farthest,
}


def estimator_accuracies(split: ClassIndexedSplit, spec, ridge: rivals.RidgeMap, count: int) -> dict[str, np.ndarray]:
    """Per-episode accuracy of every estimator on `count` episodes of `split`."""
    plan = episodes.sample_plan(split, spec, EPISODE_SEED, np.arange(count))
    batch = evaluate.episodes_from_plan(split, plan)
    grouped = support_by_class(batch.support_features, batch.support_labels, spec.ways)
    weights = {
        "prototypes": grouped.mean(axis=-2),
        "class means (ceiling)": class_means(split)[plan.classes],
        "ridge (fit on base classes)": ridge.weights(batch.support_features, batch.support_labels, spec.ways),
    }
    if spec.shots > 1:
        weights |= {name: estimate(grouped) for name, estimate in ROBUST.items()}
    return {name: rivals.weight_accuracies(np.asarray(w, np.float32), batch) for name, w in weights.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/headline"))
    parser.add_argument("--episodes", type=int, default=600)
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    reused = provenance.check_finished_runs([args.workdir / f"seed{seed}" for seed in seeds], args.reuse)
    rows, spread_rows, per_episode = [], [], {}
    for seed in seeds:
        run = args.workdir / f"seed{seed}"
        config = read_run_record(run)
        if config is None or not (run / "results.json").exists():
            raise SystemExit(f"error: {run} holds no finished run; run `python -m benchmarks.headline --seeds {args.seeds}` first.")
        chosen = json.loads((run / "results.json").read_text())["selected_on_validation"]
        splits = split_features(run, config)
        spread_rows += [{"seed": seed, "classes": name, **spread(splits[key])} for key, name in (("train", "base"), ("validation", "validation"))]
        for shots, spec in settings.episode_specs(config).items():
            strength = float(chosen[str(shots)]["ridge"]["choice"]["strength"])
            draws = rivals.prototype_draws(splits["train"], shots, config.rivals.ridge.draws_per_class, seed)
            ridge = rivals.fit_ridge(*draws, strength)
            for key, classes in (("train", "base (trained on)"), ("validation", "validation (new)")):
                accuracies = estimator_accuracies(splits[key], spec, ridge, args.episodes)
                for name, accuracy in accuracies.items():
                    result = evaluate.summarize(name, accuracy, spec.ways, shots, accuracies["prototypes"])
                    per_episode[f"seed{seed}/{key}/{name}/{shots}shot"] = accuracy
                    rows.append(
                        {
                            "seed": seed,
                            "classes": classes,
                            "shots": shots,
                            "estimator": name,
                            "accuracy_percent": round(100 * result.accuracy, 2),
                            "ci95_percent": round(100 * result.ci95, 2),
                            "vs_prototypes_points": round(100 * result.paired_diff, 2),
                            "vs_prototypes_ci95_points": round(100 * result.paired_ci95, 2),
                        }
                    )
                    print(rows[-1], flush=True)
    spread_table = report.markdown_table(spread_rows)
    report.publish(
        "headroom",
        rows,
        "Headroom: what a map from a class's support examples to its weights could gain, and where",
        f"`python -m benchmarks.headroom --seeds {args.seeds} --episodes {args.episodes}`. Each seed's cached backbone "
        f"features (scaled as its run scales them); {args.episodes} 5-way episodes (15 queries a class, episode seed "
        f"{EPISODE_SEED}) of the base classes and as many of the validation classes; cosine classifiers with the "
        "estimated weights; paired differences against prototypes on the same episodes, in points. Class means "
        "(ceiling) uses every render of the episode's classes. Renders of KanjiVG glyph stroke data, not Omniglot or "
        "miniImageNet."
        + "\n\nSpread of each split's features (squared distances):\n\n"
        + spread_table,
        full_rows=rows + spread_rows,
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
