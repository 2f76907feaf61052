"""Is MetaDiff's failure memorization? Trained denoisers on the base classes they were trained on, and on new ones.

    python -m benchmarks.memorization [--seeds 0,1,2] [--workdir runs/headline] [--variants published,anchor_prototypes,anchor_prototypes_sees_prototypes]
        [--reuse]

Needs `python -m benchmarks.headline` (with those variants) done for those seeds. For the main run's
denoiser and each variant's, 600 episodes of the BASE (train) classes it was trained on and 600 of the
validation classes, both with the prototype classifier on the same episodes: a denoiser that memorized where
the base classes sit, rather than learning how to read a support set, beats prototypes on base episodes and
loses to them on new classes; one that fails on both has another cause. Writes
benchmarks/results/memorization.json, memorization_per_episode.npz and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import numpy as np

from benchmarks import report
from launch import provenance, settings, stages
from launch.workdir import read_run_record
from metadiff_jax import checkpoints, evaluate, feature_splits, sampler
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax.data import datasets, episodes
from metadiff_jax.data.split import ClassIndexedSplit


def split_features(run: pathlib.Path, config) -> dict[str, ClassIndexedSplit]:
    """The run's cached features of every split, scaled as the run scaled them."""
    builder = stages.dataset(config)
    (cache,) = sorted((run / "features").glob("*.npz"))
    with np.load(cache) as arrays:
        splits = {name: ClassIndexedSplit(arrays[name], datasets.load_split(builder, name).class_starts, name) for name in ("train", "validation")}
    return feature_splits.scale_to_unit_targets(splits)[0] if config.metadiff.unit_scale_targets else splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/headline"))
    parser.add_argument("--variants", default="published,anchor_prototypes,anchor_prototypes_sees_prototypes")
    parser.add_argument("--episodes", type=int, default=600)
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    runs_of = {int(s): {"default": args.workdir / f"seed{s}"} | {v: args.workdir / f"seed{s}_variants" / v for v in variants} for s in args.seeds.split(",")}
    reused = provenance.check_finished_runs([run for runs in runs_of.values() for run in runs.values()], args.reuse)
    rows, per_episode = [], {}
    for seed, runs in runs_of.items():
        splits = None
        for name, run in runs.items():
            config = read_run_record(run)
            if config is None or not (run / "results.json").exists():
                raise SystemExit(f"error: {run} holds no finished run; run `python -m benchmarks.headline --variants {args.variants}` first.")
            splits = splits or split_features(args.workdir / f"seed{seed}", config)
            for shots, spec in settings.episode_specs(config).items():
                model = settings.make_denoiser(config, splits["train"].images.shape[-1])
                template = denoiser_lib.init_params(model, jax.random.PRNGKey(0))
                params = checkpoints.restore_tree((run / "checkpoints" / f"metadiff_{shots}shot").absolute(), {"params": template, "ema_params": template})
                sample_task = sampler.make_sample_task(model, settings.noise_schedule(config), settings.sampler_config(config))
                evaluator = evaluate.make_evaluator(sample_task, spec.ways, model.dim)
                for split in ("train", "validation"):
                    plan = episodes.sample_plan(splits[split], spec, 7, np.arange(args.episodes))
                    test = evaluate.episodes_from_plan(splits[split], plan)
                    prototypes = evaluate.prototype_accuracies(test, spec.ways)
                    accuracies = evaluator(params["ema_params"], test, jax.random.PRNGKey(seed))[0]
                    result = evaluate.summarize(name, accuracies, spec.ways, shots, prototypes).row()
                    per_episode[f"seed{seed}/{name}/{split}/metadiff_{shots}shot"] = accuracies
                    per_episode[f"seed{seed}/{name}/{split}/prototypes_{shots}shot"] = prototypes
                    rows.append({"seed": seed, "model": name, "classes": "base (trained on)" if split == "train" else "validation (new)",
                                 **{k: v for k, v in result.items() if k != "method"}, "prototypes_percent": round(100 * float(prototypes.mean()), 2)})
                    print(rows[-1], flush=True)
    report.publish(
        "memorization",
        rows,
        "Memorization? Trained denoisers on the base classes they were trained on, and on new classes",
        f"`python -m benchmarks.memorization --seeds {args.seeds} --variants {args.variants}`. Final EMA parameters of each "
        f"run's MetaDiff; {args.episodes} 5-way episodes of the base (train) classes and as many of the validation classes "
        "(episode seed 7), each sampled as the run samples; paired_diff against the prototype classifier on the same "
        "episodes, in points. Renders of KanjiVG glyph stroke data, not Omniglot or miniImageNet.",
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
