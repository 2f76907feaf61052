"""A learned few-step sampler against the 1,000-step DDPM mean, on the default dataset's trained denoisers.

    python -m benchmarks.learned_sampler [--seeds 0,1,2] [--select_seed 0] [--steps 5,10,25] [--workdir runs/samplers] [--reuse]

For each seed S this reads the main run <workdir>/seed<S> (run first when missing: configs/default.py with
--config.seed=S and the rivals finetuned and ridge), its trained MetaDiff (the default's denoiser, anchored
and seeing p; its EMA parameters, as tested) and the very test episodes of its table. For each shot count
and K: plain DDIM with K steps from the noise's mean (zero) and from noise, and the learned K-step sampler
(metadiff_jax/learned_sampler.py: a rule's 2K coefficients trained by the query loss through the sampler on
base-class episodes, the denoiser frozen, start zero). Its setting (the rule, "linear" from DDIM's
coefficients or "ddpm_mean" from the respaced DDPM mean's; Adam's learning rate; the logit scale of the
query loss's cosine classifier) is chosen per shot count and K on the 600 validation episodes of
`--select_seed` and confirmed on every seed. Each is paired per test episode with the run's own MetaDiff,
the 1,000-step DDPM mean (`ddpm_mean_1000`), on the same 600 episodes. Learned coefficients are saved in
<workdir>/seed<S>/learned_samplers/ and reused on a rerun. Pooled rows average each episode over seeds first;
`seed_diffs_points` lists the per-seed paired differences and `seed_t95_points` the 95 % t-interval over them.
Writes benchmarks/results/learned_sampler.json, learned_sampler_per_episode.npz and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
from typing import NamedTuple

import jax
import numpy as np

from benchmarks import report, trained_runs
from launch import provenance
from metadiff_jax import checkpoints, evaluate, learned_sampler, sampler


def evaluator(run: trained_runs.Run, shot: trained_runs.Shot, config: sampler.SamplerConfig, coefficients=None):
    """accuracies(episodes) of the run's denoiser read by `config`'s sampler (with `coefficients`, if given)."""
    task = functools.partial(sampler.make_sample_task(run.denoiser, run.schedule, config), coefficients=coefficients)
    evaluate_fn = evaluate.make_evaluator(task, shot.spec.ways, run.denoiser.dim)
    return lambda episodes: evaluate_fn(shot.params, episodes, jax.random.PRNGKey(run.config.seed))[0]


class Candidate(NamedTuple):
    """One setting of the search: the rule whose coefficients are learned, Adam's rate, the logit scale."""

    method: str
    learning_rate: float
    scale: float

    def name(self) -> str:
        return f"{self.method}_lr{self.learning_rate:g}_scale{self.scale:g}"


def learned(run, shot, candidate: Candidate, steps: int, train_steps: int, path: pathlib.Path):
    """The learned sampler's coefficients: restored from `path`, or trained and saved there."""
    config = learned_sampler.LearnedSamplerConfig(
        candidate.method, steps, learning_rate=candidate.learning_rate, train_steps=train_steps, scale=candidate.scale, seed=run.config.seed
    )
    if checkpoints.is_saved(path):
        return config, checkpoints.restore_tree(path, sampler.initial_coefficients(run.schedule, config.sampler))
    coefficients, _ = learned_sampler.train_sampler(run.denoiser, run.schedule, shot.params, run.features["train"], shot.spec, config)
    checkpoints.save_tree(path, coefficients)
    return config, coefficients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--select_seed", type=int, default=0, help="the seed whose validation episodes choose each K's setting")
    parser.add_argument("--steps", default="5,10,25", help="K, the sampler steps")
    parser.add_argument("--methods", default="linear,ddpm_mean", help="the rules whose coefficients are learned (searched)")
    parser.add_argument("--learning_rates", default="0.0001,0.0003,0.001,0.003", help="searched")
    parser.add_argument("--scales", default="3,10,30,100", help="the cosine classifier's logit scale in the query loss (searched)")
    parser.add_argument("--train_steps", type=int, default=1000)
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/samplers"))
    parser.add_argument("--data_dir", default="", help="tfds data folder (default: the config's)")
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    seeds = [args.select_seed] + [int(s) for s in args.seeds.split(",") if int(s) != args.select_seed]
    reused = provenance.check_finished_runs([args.workdir / f"seed{seed}" for seed in seeds], args.reuse)
    steps = [int(k) for k in args.steps.split(",")]
    grid = [
        Candidate(method, float(rate), float(scale))
        for method in args.methods.split(",")
        for rate in args.learning_rates.split(",")
        for scale in args.scales.split(",")
    ]
    chosen, rows, per_episode, by_seed, on_validation, ways = {}, [], {}, {}, {}, 5
    for seed in seeds:
        workdir = args.workdir / f"seed{seed}"
        trained_runs.main_run(workdir, seed, args.data_dir)
        run = trained_runs.load(workdir, args.data_dir)
        for shots, shot in run.shots.items():
            accuracies = {"ddpm_mean_1000": shot.per_episode["metadiff"]}
            validation = {"ddpm_mean_1000": shot.selected["metadiff"]["validation_accuracy"]}
            choices = {}
            for k in steps:
                for start in ("zero", "noise"):
                    read = evaluator(run, shot, sampler.SamplerConfig("ddim", k, start))
                    validation[f"ddim_{k}_{start}"], accuracies[f"ddim_{k}_{start}"] = float(read(shot.validation).mean()), read(shot.test)
                candidates = {}
                for candidate in grid if seed == args.select_seed else [chosen[shots, k]]:
                    path = (workdir / "learned_samplers" / f"{candidate.name()}_{k}steps_{shots}shot_{args.train_steps}steps").absolute()
                    config, coefficients = learned(run, shot, candidate, k, args.train_steps, path)
                    read = evaluator(run, shot, config.sampler, coefficients)
                    candidates[candidate] = (float(read(shot.validation).mean()), read)
                if seed == args.select_seed:
                    chosen[shots, k] = max(candidates, key=lambda c: candidates[c][0])
                name = f"learned_{k}"
                validation[name], accuracies[name] = candidates[chosen[shots, k]][0], candidates[chosen[shots, k]][1](shot.test)
                choices[name] = {**chosen[shots, k]._asdict(), "train_steps": args.train_steps, "chosen_on_seed": args.select_seed}
                if seed == args.select_seed:
                    choices[name]["validation_percent_searched"] = {c.name(): round(100 * v[0], 2) for c, v in candidates.items()}
                print(f"[seed {seed}, {shots}-shot, K = {k}] " + ", ".join(f"{n} {100 * v:.2f}" for n, v in validation.items() if str(k) in n), flush=True)
            reference = accuracies["ddpm_mean_1000"]
            for name, values in accuracies.items():
                result = evaluate.summarize(name, values, shot.spec.ways, shots, None if name == "ddpm_mean_1000" else reference).row()
                rows.append({"seed": seed, **result, "validation_percent": round(100 * validation[name], 2), "choice": choices.get(name)})
                per_episode[f"seed{seed}/{name}_{shots}shot"] = values
            by_seed.setdefault(shots, {})[seed] = accuracies
            ways = shot.spec.ways
            on_validation.setdefault(shots, {})[seed] = validation
    for shots, seeds_rows in by_seed.items():
        pooled = trained_runs.pooled(seeds_rows)
        for name, values in pooled.items():
            paired = None if name == "ddpm_mean_1000" else pooled["ddpm_mean_1000"]
            result = evaluate.summarize(name, values, ways, shots, paired).row()
            diffs = [] if paired is None else [float(np.mean(r[name] - r["ddpm_mean_1000"])) for r in seeds_rows.values()]
            mean, half = trained_runs.seed_level(diffs) if diffs else (None, None)
            rows.append(
                {
                    "seed": "pooled",
                    **result,
                    "validation_percent": round(100 * float(np.mean([v[name] for v in on_validation[shots].values()])), 2),
                    "seeds": len(seeds_rows),
                    "seed_diffs_points": None if not diffs else [round(100 * d, 2) for d in diffs],
                    "seed_t95_points": None if half is None or np.isnan(half) else round(100 * half, 2),
                }
            )
    table = [{k: v for k, v in row.items() if k not in ("choice", "ways")} for row in rows]
    report.publish(
        "learned_sampler",
        table,
        "A learned few-step sampler against the 1,000-step DDPM mean",
        f"`python -m benchmarks.learned_sampler --seeds {args.seeds} --select_seed {args.select_seed} --steps {args.steps}`. "
        "Each seed's main run of configs/default.py (the default's denoiser, its EMA parameters); its 600 test episodes (5-way, "
        "15 queries a class); paired_diff: per episode against the same denoiser read by the 1,000-step DDPM mean "
        "(`ddpm_mean_1000`, the run's own MetaDiff row), in points. `learned_K`: a rule's 2K coefficients learned by the query "
        f"loss on base-class episodes ({args.train_steps} Adam steps of 16 episodes, the denoiser frozen, start zero); the rule "
        f"(among {args.methods}; linear starts at DDIM's coefficients, ddpm_mean at the respaced DDPM mean's), the learning rate "
        f"(among {args.learning_rates}) and the logit scale (among {args.scales}) chosen per shot count and K on seed "
        f"{args.select_seed}'s 600 validation episodes (`validation_percent`). `ddim_K_zero` / `ddim_K_noise`: plain DDIM from "
        "the noise's mean / from noise. Pooled: each episode averaged over the seeds first; `seed_diffs_points`: the per-seed "
        "paired differences, `seed_t95_points`: the 95 % t-interval over them. Renders of KanjiVG glyph stroke data, not "
        "Omniglot or miniImageNet. The choices and every searched setting's validation accuracy: "
        "benchmarks/results/learned_sampler.json.",
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
