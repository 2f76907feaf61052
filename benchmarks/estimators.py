"""Samplers as estimators on the default dataset: DDIM at 50 steps against the 1000-step DDPM mean, per seed.

    python -m benchmarks.estimators [--seeds 0,1,2] [--workdir runs/headline] [--reuse]

Needs `python -m benchmarks.headline` with the anchor_prototypes and anchor_prototypes_sees_prototypes
variants done for those seeds. For each seed and each of three trained denoisers (the main run's, diffusing
W from N(0, I); the anchor_prototypes variant's, diffusing W - p from N(p, I); and the default's, anchored
and seeing p), runs `launch.ablate` with evaluation-only
ablations on the same trained parameters: one DDIM-50 draw, DDIM-50 from the noise's mean (start zero), the
mean of 8 DDIM-50 draws, and stochastic DDPM. Each is paired with the same denoiser's 1000-step deterministic
DDPM mean on the same 600 test episodes, with its accuracy on 600 validation episodes beside. Pooled rows
average each episode over seeds first. Writes
benchmarks/results/estimators.json, estimators_per_episode.npz and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

from benchmarks import report
from launch import compare, provenance
from metadiff_jax import evaluate

ESTIMATORS = ("sampler_ddim_50", "sampler_ddim_50_zero", "sampler_ddim_50_draws_8", "sampler_ddpm_stochastic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("runs/headline"))
    provenance.add_reuse_argument(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = {
        "reference_anchor_zero": lambda s: args.workdir / f"seed{s}",
        "anchor_prototypes": lambda s: args.workdir / f"seed{s}_variants" / "anchor_prototypes",
        "anchor_prototypes_sees_prototypes": lambda s: args.workdir / f"seed{s}_variants" / "anchor_prototypes_sees_prototypes",
    }
    to_read = [main_dir(s) for main_dir in models.values() for s in seeds]
    to_read += [args.workdir / f"seed{s}_estimators" / model / name for model in models for s in seeds for name in ESTIMATORS]
    reused = provenance.check_finished_runs(to_read, args.reuse)
    rows, pooled, per_episode = [], {}, {}
    for model, main_dir in models.items():
        for seed in seeds:
            main, suite = main_dir(seed), args.workdir / f"seed{seed}_estimators" / model
            if not (main / "results.json").exists():
                raise SystemExit(f"error: {main} holds no finished run; run `python -m benchmarks.headline --variants anchor_prototypes` first.")
            command = [sys.executable, "-m", "launch.ablate", "--main", str(main), "--workdir", str(suite), "--only", ",".join(ESTIMATORS)]
            command += ["--reuse"] if args.reuse else []
            print("$ " + " ".join(command), flush=True)
            subprocess.run(command, cwd=report.ROOT, check=True)
            results, accuracies = compare.load(main)
            ways = results["config"]["episodes"]["ways"]
            loaded = {"ddpm_mean_1000": (results, accuracies)} | {name: compare.load(suite / name) for name in ESTIMATORS}
            on_validation = {name: run_results["selected_on_validation"] for name, (run_results, _) in loaded.items()}
            for shots in results["paired_against"]:
                runs = {name: run_accuracies[f"metadiff_{shots}shot"] for name, (_, run_accuracies) in loaded.items()}
                for name, values in runs.items():
                    reference = None if name == "ddpm_mean_1000" else runs["ddpm_mean_1000"]
                    validation = on_validation[name][shots]["metadiff"]["validation_accuracy"]
                    rows.append({"model": model, "seed": seed, **evaluate.summarize(name, values, ways, int(shots), reference).row(),
                                 "validation_percent": round(100 * validation, 2)})
                    pooled.setdefault((model, shots, name), []).append((values, validation))
                    per_episode[f"{model}/seed{seed}/{name}_{shots}shot"] = values
    for (model, shots, name), runs in pooled.items():
        reference = None if name == "ddpm_mean_1000" else np.mean([v for v, _ in pooled[(model, shots, "ddpm_mean_1000")]], axis=0)
        summary = evaluate.summarize(name, np.mean([v for v, _ in runs], axis=0), ways, int(shots), reference).row()
        rows.append({"model": model, "seed": "pooled", **summary, "validation_percent": round(100 * float(np.mean([v for _, v in runs])), 2)})
    report.publish(
        "estimators",
        rows,
        "Samplers as estimators: DDIM-50 against the 1000-step DDPM mean on the default dataset",
        f"`python -m benchmarks.estimators --seeds {args.seeds}`. Each estimator runs on the same trained denoiser as its "
        "ddpm_mean_1000 row and is paired with it per episode (paired_diff, points) on the same 600 test episodes; "
        "reference_anchor_zero is the main run's denoiser (W diffused from N(0, I)), anchor_prototypes the variant's "
        "(W - p from N(p, I)), anchor_prototypes_sees_prototypes the default's (anchored, the condition also sees p). "
        "validation_percent: the same estimator on 600 validation episodes (where a choice between them is made). "
        "Renders of KanjiVG glyph stroke data, not Omniglot or miniImageNet. Runs: "
        + json.dumps({m: [str(f(s)) for s in seeds] for m, f in models.items()}),
        reused=reused,
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
