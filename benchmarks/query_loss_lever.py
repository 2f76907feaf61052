"""The query-loss lever on the default dataset: the default's trained denoiser fine-tuned with the diffusion
loss plus a weighted query loss through K sampler steps, against the same fine-tuning without it.

    python -m benchmarks.query_loss_lever [--seeds 0,1,2] [--select_seed 0] [--weights 0.01,0.1,1,10,100] [--steps 10,25,50] [--reuse]

For each seed S it reads the main run <workdir>/seed<S> (run first when missing, as benchmarks.learned_sampler
does) and fine-tunes its MetaDiff from the EMA parameters it tested, `--finetune_steps` more outer steps with
its own settings, the loss being the diffusion loss plus `weight` times the query loss through K steps of the
DDPM mean (the respaced process of K evenly spaced timesteps, from noise, each step rematerialised): the
sampler the default reads with, shortened so that its gradient fits this CPU. The control is the same
fine-tuning with weight 0 (the diffusion loss alone): what more training gives without the query loss. Every
model is read as the default is, by the 1,000-step DDPM mean; the control and the chosen query-loss model
also by the K steps the query loss ran through (`control_read_k`, `query_loss_read_k`).

Weight and K are chosen on the 600 validation episodes of `--select_seed` (per shot count) and confirmed on
every seed. Rows per seed and pooled (each episode averaged over seeds first): the run's own MetaDiff
(`default`), its strongest rival on validation, the control and the query-loss model, each paired per test
episode against the rival and against the default; `seed_diffs_points` lists the per-seed paired
differences against the default and `seed_t95_points` the 95 % t-interval over them. Writes
benchmarks/results/query_loss_lever.json, query_loss_lever_per_episode.npz and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib

import jax
import numpy as np

from benchmarks import report, trained_runs
from launch import provenance, settings
from metadiff_jax import checkpoints, evaluate, sampler, train
from metadiff_jax.query_loss import QueryLossConfig


def finetuned(run: trained_runs.Run, shot: trained_runs.Shot, weight: float, steps: int, finetune_steps: int, path: pathlib.Path):
    """The run's denoiser fine-tuned with `weight` times the query loss through `steps` DDPM-mean steps:
    its EMA parameters, restored from `path` or trained and saved there."""
    if checkpoints.is_saved(path):
        return checkpoints.restore_tree(path, shot.params)
    query = QueryLossConfig(weight=weight, method="ddpm_mean", steps=steps, remat=True, start="noise") if weight else QueryLossConfig()
    config = dataclasses.replace(settings.train_config(run.config), steps=finetune_steps, query_loss=query)
    state, _ = train.train_denoiser(run.denoiser, run.schedule, shot.params, run.features["train"], shot.spec, config)
    checkpoints.save_tree(path, state.ema_params)
    return state.ema_params


def read(run: trained_runs.Run, shot: trained_runs.Shot, params, steps: int | None = None):
    """(validation accuracy, test accuracies) of `params` read as the default reads, by the 1,000-step DDPM
    mean from noise, or by `steps` steps of it (the respaced process the query loss ran through)."""
    sample_task = sampler.make_sample_task(run.denoiser, run.schedule, dataclasses.replace(settings.sampler_config(run.config), steps=steps))
    evaluate_fn = evaluate.make_evaluator(sample_task, shot.spec.ways, run.denoiser.dim)
    key = jax.random.PRNGKey(run.config.seed)
    return float(evaluate_fn(params, shot.validation, key)[0].mean()), evaluate_fn(params, shot.test, key)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--select_seed", type=int, default=0, help="the seed whose validation episodes choose weight and K")
    parser.add_argument("--weights", default="0.01,0.1,1,10,100")
    parser.add_argument("--steps", default="10,25,50", help="K, the DDPM-mean steps the query loss runs through")
    parser.add_argument("--finetune_steps", type=int, default=2000)
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/samplers"))
    parser.add_argument("--data_dir", default="", help="tfds data folder (default: the config's)")
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    seeds = [args.select_seed] + [int(s) for s in args.seeds.split(",") if int(s) != args.select_seed]
    reused = provenance.check_finished_runs([args.workdir / f"seed{seed}" for seed in seeds], args.reuse)
    grid = [(float(w), int(k)) for w in args.weights.split(",") for k in args.steps.split(",")]
    chosen, rows, per_episode, by_seed, on_validation = {}, [], {}, {}, {}
    for seed in seeds:
        workdir = args.workdir / f"seed{seed}"
        trained_runs.main_run(workdir, seed, args.data_dir)
        run = trained_runs.load(workdir, args.data_dir)
        results = json.loads((workdir / "results.json").read_text())
        for shots, shot in run.shots.items():
            rival = results["paired_against"][str(shots)]
            accuracies = {"default": shot.per_episode["metadiff"], "rival": shot.per_episode[rival]}
            validation = {"default": shot.selected["metadiff"]["validation_accuracy"], "rival": shot.selected[rival]["validation_accuracy"]}
            candidates = grid if seed == args.select_seed else [chosen[shots]]
            params_of = {}
            for weight, steps in [(0.0, 0)] + candidates:
                name = "control" if weight == 0 else f"query_loss_w{weight:g}_k{steps}"
                path = (workdir / "query_loss_lever" / f"{name}_{shots}shot_{args.finetune_steps}steps").absolute()
                print(f"[seed {seed}, {shots}-shot] {name}", flush=True)
                params_of[name] = finetuned(run, shot, weight, steps, args.finetune_steps, path)
                validation[name], accuracies[name] = read(run, shot, params_of[name])
            if seed == args.select_seed:
                chosen[shots] = max(grid, key=lambda c: validation[f"query_loss_w{c[0]:g}_k{c[1]}"])
            picked = f"query_loss_w{chosen[shots][0]:g}_k{chosen[shots][1]}"
            accuracies["query_loss"], validation["query_loss"] = accuracies[picked], validation[picked]
            # Does training through K steps make the K-step sampler itself good? Both models read by it.
            for name, model in (("control_read_k", "control"), ("query_loss_read_k", picked)):
                validation[name], accuracies[name] = read(run, shot, params_of[model], chosen[shots][1])
            for name, values in accuracies.items():
                against_rival = evaluate.summarize(name, values, shot.spec.ways, shots, None if name == "rival" else accuracies["rival"]).row()
                against_default = None if name == "default" else evaluate.summarize(name, values, shot.spec.ways, shots, accuracies["default"]).row()
                rows.append(
                    {
                        "seed": seed,
                        **{k: v for k, v in against_rival.items() if k != "ways"},
                        "rival": rival,
                        "vs_default_points": None if against_default is None else against_default["paired_diff_points"],
                        "vs_default_ci95_points": None if against_default is None else against_default["paired_ci95_points"],
                        "validation_percent": round(100 * validation[name], 2),
                        "choice": {"weight": chosen[shots][0], "steps": chosen[shots][1]} if name == "query_loss" else None,
                    }
                )
                per_episode[f"seed{seed}/{name}_{shots}shot"] = values
            kept = ("default", "rival", "control", "query_loss", "control_read_k", "query_loss_read_k")
            by_seed.setdefault(shots, {})[seed] = {n: accuracies[n] for n in kept}
            on_validation.setdefault(shots, {})[seed] = validation
    for shots, seeds_rows in by_seed.items():
        pooled = trained_runs.pooled(seeds_rows)
        for name, values in pooled.items():
            against_rival = evaluate.summarize(name, values, 5, shots, None if name == "rival" else pooled["rival"]).row()
            against_default = None if name == "default" else evaluate.summarize(name, values, 5, shots, pooled["default"]).row()
            diffs = [] if name == "default" else [float(np.mean(r[name] - r["default"])) for r in seeds_rows.values()]
            _, half = trained_runs.seed_level(diffs) if diffs else (None, None)
            rows.append(
                {
                    "seed": "pooled",
                    **{k: v for k, v in against_rival.items() if k != "ways"},
                    "rival": "per seed",
                    "vs_default_points": None if against_default is None else against_default["paired_diff_points"],
                    "vs_default_ci95_points": None if against_default is None else against_default["paired_ci95_points"],
                    "validation_percent": round(100 * float(np.mean([v[name] for v in on_validation[shots].values()])), 2),
                    "seeds": len(seeds_rows),
                    "seed_diffs_points": None if not diffs else [round(100 * d, 2) for d in diffs],
                    "seed_t95_points": None if half is None or np.isnan(half) else round(100 * half, 2),
                }
            )
    report.publish(
        "query_loss_lever",
        [{k: v for k, v in row.items() if k != "choice"} for row in rows],
        "The query-loss lever: fine-tuning the default's denoiser with the query loss through the sampler",
        f"`python -m benchmarks.query_loss_lever --seeds {args.seeds} --select_seed {args.select_seed} --weights {args.weights} "
        f"--steps {args.steps} --finetune_steps {args.finetune_steps}`. Each seed's main run of configs/default.py; its MetaDiff "
        f"(`default`) fine-tuned {args.finetune_steps} more outer steps from its EMA parameters with its own settings, with the "
        "query loss through K DDPM-mean steps (respaced, from noise, rematerialised) at `weight` (`query_loss_wW_kK`; "
        "`query_loss`: the pair chosen on the select seed's 600 validation episodes, per shot count) or without it (`control`). "
        "Every model read by the 1,000-step DDPM mean, and `control_read_k` / `query_loss_read_k` the same two models read by "
        "the K chosen steps of it (the sampler the query loss ran through), on the run's 600 test episodes (5-way, 15 queries a class); paired_diff "
        "against the seed's strongest rival on validation (`rival`), vs_default against the run's own MetaDiff, in points. "
        "Pooled: each episode averaged over the seeds first; `seed_diffs_points`: per-seed differences against the default, "
        "`seed_t95_points`: the 95 % t-interval over them. Renders of KanjiVG glyph stroke data, not Omniglot or miniImageNet.",
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
