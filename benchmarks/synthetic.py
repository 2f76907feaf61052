"""Does MetaDiff work, where we know the answer? Synthetic few-shot features with a structure to learn.

    python -m benchmarks.synthetic [--seeds 0,1,2] [--episodes 600]

Base (64), validation (50) and test (100) classes have means near one shared rank-4 affine subspace of a
64-d space; examples are the mean plus isotropic noise (metadiff_jax.synthetic). From K shots the support
mean is not the best estimate of a class mean: its projection onto the subspace is (the ORACLE row, which
knows the subspace; the ceiling of a linear method). Every learner is fit on the base classes only.

Rows: prototypes (learns nothing); the ridge map from K-shot prototype to class mean and the fine-tuned
cosine head, their settings chosen on validation episodes; the one-step regressor (the default's denoiser,
anchored and seeing p, trained to map the support straight to the class means); MetaDiff as published
(condition 2K (W - p), W diffused from N(0, I), deterministic DDPM mean), the previous default (condition W - p), anchored
(W - p diffused from N(p, I)), and anchored seeing p; "metadiff chosen" is the MetaDiff variant best on
validation, among every variant and estimator. Each diffusion model is read with the reference's 1000-step
deterministic DDPM mean and with DDIM-50 from the noise's mean (start zero, `_ddim50_zero`); the anchored
model also with one DDIM-50 draw and the mean of 8 draws. Every denoiser is trained once per seed;
test episodes are the same 600 for every row and seed. Per seed and pooled (each episode's accuracy averaged
over the seeds); paired differences per episode against the strongest non-diffusion row on validation.
Writes benchmarks/results/synthetic.json, synthetic_per_episode.npz and its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from benchmarks import report
from metadiff_jax import denoiser as dn
from metadiff_jax import evaluate as ev
from metadiff_jax import rivals, synthetic, train
from metadiff_jax import sampler as sp
from metadiff_jax import schedule as sl
from metadiff_jax.data import episodes

TRAIN = train.TrainConfig(steps=10_000, batch_size=8, learning_rate=1e-4, weight_decay=5e-4, ema_decay=0.999, ema_start=200)
DATA = synthetic.SyntheticConfig(noise_scale=3.0)
WAYS = 5
# name -> (TCUNet fields, training objective)
MODELS = {
    "metadiff_published": (dict(condition="gradient"), "diffusion"),
    "metadiff_default": (dict(condition="normalized_gradient"), "diffusion"),
    "metadiff_anchored": (dict(condition="normalized_gradient", anchor="prototypes"), "diffusion"),
    "metadiff_anchored_sees_p": (dict(condition="normalized_gradient_and_prototypes", anchor="prototypes"), "diffusion"),
    # The default's network (anchored, seeing p) trained to map the support to the class means in one pass.
    "regressor": (dict(condition="normalized_gradient_and_prototypes", anchor="prototypes"), "regression"),
}
ESTIMATORS = {
    "ddim50": sp.SamplerConfig("ddim", 50),
    "ddim50_zero": sp.SamplerConfig("ddim", 50, start="zero"),
    "ddim50_draws8": sp.SamplerConfig("ddim", 50, draws=8),
}


def seed_accuracies(splits, shots: int, seed: int, validation, test) -> tuple[dict, dict, dict]:
    """Per-episode test accuracies of every row for one seed, validation accuracies, and the choices made."""
    schedule = sl.linear_schedule(1000)
    spec = episodes.EpisodeSpec(WAYS, shots, 15)
    accuracies, on_validation, choices = {}, {}, {}
    for name, (fields, objective) in MODELS.items():
        model = dn.make_denoiser("tcunet", DATA.dim, **fields)
        config = train.TrainConfig(**{**TRAIN.__dict__, "seed": seed, "objective": objective})
        print(f"[{shots}-shot seed {seed}] training {name}", flush=True)
        state, _ = train.train_denoiser(model, schedule, dn.init_params(model, jax.random.PRNGKey(seed)), splits["train"], spec, config, progress=False)
        samplers = {name: sp.SamplerConfig("ddpm_mean")}
        if objective == "diffusion":
            samplers[f"{name}_ddim50_zero"] = ESTIMATORS["ddim50_zero"]
        if name == "metadiff_anchored":
            samplers.update({f"{name}_{estimator}": sampler for estimator, sampler in ESTIMATORS.items()})
        for row, sampler in samplers.items():
            evaluator = ev.make_evaluator(train.weights_reader(model, schedule, config, sampler), WAYS, model.dim)
            on_validation[row] = float(evaluator(state.ema_params, validation, jax.random.PRNGKey(seed))[0].mean())
            accuracies[row] = evaluator(state.ema_params, test, jax.random.PRNGKey(seed))[0]
    variants = {row: value for row, value in on_validation.items() if row.startswith("metadiff")}
    chosen = max(variants, key=variants.get)
    accuracies["metadiff_chosen"], on_validation["metadiff_chosen"], choices["metadiff_chosen"] = accuracies[chosen], variants[chosen], chosen
    context = rivals.RivalContext(splits["train"], spec, seed, validation, test)
    selected_rivals = {
        "prototypes": rivals.select_prototypes(context),
        "finetuned": rivals.select_finetuned(rivals.FinetunedSettings(), context),
        "ridge": rivals.select_ridge(rivals.RidgeSettings(strengths=(1.0, 10.0, 100.0, 1000.0, 10000.0)), context),
    }
    for row, selected in selected_rivals.items():
        accuracies[row], on_validation[row], choices[row] = selected.test_accuracies, selected.validation_accuracy, selected.choice
    oracle = lambda e: rivals.weight_accuracies(synthetic.subspace_oracle_weights(DATA, e.support_features, e.support_labels, WAYS), e)
    accuracies["oracle_subspace"], on_validation["oracle_subspace"] = oracle(test), float(oracle(validation).mean())
    return accuracies, on_validation, choices


def rows_for(seed, shots: int, accuracies: dict, on_validation: dict, seeds: int) -> list[dict]:
    """Rows of one seed (or "pooled"), paired against the strongest non-diffusion row on validation, with
    each row's share of the oracle's gain over prototypes."""
    learned = {row: on_validation[row] for row in ("finetuned", "ridge", "regressor")}
    rival = max(learned, key=learned.get)
    gain = float(np.mean(accuracies["oracle_subspace"]) - np.mean(accuracies["prototypes"]))
    rows = []
    for row, values in accuracies.items():
        result = ev.summarize(row, values, WAYS, shots, None if row == rival else accuracies[rival]).row()
        share = (float(np.mean(values)) - float(np.mean(accuracies["prototypes"]))) / gain
        rows.append({"seed": seed, **result, "paired_against": rival, "share_of_oracle_gain": round(share, 3),
                     "validation_percent": round(100 * on_validation[row], 2), "seeds": seeds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (denoisers, rivals' draws)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    splits = synthetic.make_splits(DATA)
    rows, per_episode, choices = [], {}, {}
    for shots in (1, 5):
        spec = episodes.EpisodeSpec(WAYS, shots, 15)
        test, _ = ev.fixed_episodes(splits["test"], spec, args.episodes, seed=0)
        validation, _ = ev.fixed_episodes(splits["validation"], spec, args.episodes, seed=1)
        per_seed, validation_per_seed = {}, {}
        for seed in seeds:
            per_seed[seed], validation_per_seed[seed], choices[f"{shots}shot/seed{seed}"] = seed_accuracies(splits, shots, seed, validation, test)
            rows += rows_for(seed, shots, per_seed[seed], validation_per_seed[seed], 1)
            per_episode.update({f"seed{seed}/{row}_{shots}shot": values for row, values in per_seed[seed].items()})
            print("\n".join(str(r) for r in rows[-len(per_seed[seed]):]), flush=True)
        pooled = {row: np.mean([per_seed[s][row] for s in seeds], axis=0) for row in per_seed[seeds[0]]}
        pooled_validation = {row: float(np.mean([validation_per_seed[s][row] for s in seeds])) for row in pooled}
        rows += rows_for("pooled", shots, pooled, pooled_validation, len(seeds))
    report.publish(
        "synthetic",
        [{k: v for k, v in row.items()} for row in rows],
        "Synthetic: MetaDiff against the non-diffusion rows and the oracle",
        f"`python -m benchmarks.synthetic --seeds {args.seeds}`. 5-way, {args.episodes} fixed test episodes of novel classes, "
        "15 queries a class; settings chosen on as many validation episodes of other novel classes. Accuracy +- 95% CI "
        "in %; paired_diff against the strongest non-diffusion row on validation (`paired_against`); share_of_oracle_gain = "
        "(row - prototypes) / (oracle - prototypes). Pooled rows average each episode over the seeds first. Data: "
        f"{DATA}. Training: {TRAIN}. Choices per seed: {choices}. Per-episode accuracies: "
        "benchmarks/results/synthetic_per_episode.npz.",
        per_episode=per_episode,
    )


if __name__ == "__main__":
    main()
