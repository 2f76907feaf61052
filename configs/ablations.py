"""The ablation registry: each entry is a docstring (what it changes, and why it is worth asking) and the
dotted config keys it sets. `python -m launch.ablate --main RUN --workdir DIR` runs every entry (or
`--only a,b`) as a change to the finished main run RUN, and pairs its per-episode accuracies with RUN's.

A value is a constant, or a function of the main run's config (an ablation relative to it, e.g. three times
its training steps). Variants of the default's denoiser name the default's denoiser keys too (DEFAULT_DENOISER),
so that they mean the same model whichever main run they are applied to: the headline benchmark applies
them to main runs made with the previous default. Keys a main run already has change nothing; an entry
that changes nothing in a main run is skipped with a message. A new ablation is one entry; sweeps are
generated below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from metadiff_jax import config_dict


@dataclasses.dataclass(frozen=True)
class Ablation:
    doc: str
    keys: dict[str, Any]  # dotted config key -> value, or function(main config) -> value


# The default's denoiser (configs/default.py): anchored at the prototypes and seeing them.
DEFAULT_DENOISER = {"metadiff.denoiser": "tcunet", "metadiff.tcunet.anchor": "prototypes", "metadiff.tcunet.condition": "normalized_gradient_and_prototypes"}


def _paper_metadiff_keys() -> dict[str, Any]:
    from configs import default, paper

    # MetaDiff's settings are the same in every paper configuration (only data and backbone differ).
    keys = config_dict.flattened(paper.paper_config("mini_imagenet", "conv4").metadiff, "metadiff.")
    # Its training length and EMA start relative to the main run's steps, as the paper's are to the default's
    # (30,000 and 2,000 against 20,000): the paper's own against the default's, and a short main run (the
    # tests') gets a short published one.
    default_steps = default.get_config().metadiff.steps
    for key in ("metadiff.steps", "metadiff.ema_start"):
        keys[key] = lambda main, paper_value=keys[key]: paper_value * main.metadiff.steps // default_steps
    return keys


paper_metadiff_keys = _paper_metadiff_keys()

ABLATIONS: dict[str, Ablation] = {
    "published": Ablation(
        "MetaDiff as published: every metadiff.* key of configs/paper.py (the reference's support gradient "
        "2K (W - p) as condition, W diffused from N(0, I), noise prediction, T = 1000, unrescaled features, EMA "
        "0.9999 from step 2,000, 30,000 outer steps, the deterministic DDPM mean from noise, the final EMA "
        "parameters; steps and EMA start scale with the main run's steps, 20,000 in the default). Departures "
        "left: the main run's backbone and features, and its test episodes.",
        paper_metadiff_keys,
    ),
    "anchor_zero": Ablation(
        "The previous default: W diffused from N(0, I) (anchor zero) with the denoiser seeing W - p only "
        "(condition normalized_gradient), everything else as the reference.",
        {"metadiff.tcunet.anchor": "zero", "metadiff.tcunet.condition": "normalized_gradient"},
    ),
    "anchor_prototypes": Ablation(
        "Diffuse the residual W - p from N(p, I) (anchor prototypes) instead of W from N(0, I), with the denoiser "
        "seeing W - p only (condition normalized_gradient): the noise it must predict then no longer depends on "
        "where the class sits in feature space.",
        {"metadiff.tcunet.anchor": "prototypes", "metadiff.tcunet.condition": "normalized_gradient"},
    ),
    "anchor_prototypes_x0": Ablation(
        "Anchored at the prototypes, the denoiser seeing W - p only, and predicting the clean residual x_0 "
        "instead of the noise.",
        {"metadiff.tcunet.anchor": "prototypes", "metadiff.tcunet.condition": "normalized_gradient", "metadiff.tcunet.prediction": "x0"},
    ),
    "anchor_prototypes_sees_prototypes": Ablation(
        "Anchored at the prototypes, and the denoiser sees where the class sits: W - p plus a learned projection "
        "of p (condition normalized_gradient_and_prototypes), the information a ridge map uses. The default's "
        "denoiser: it changes nothing in a default main run (skipped there) and is the default's row beside "
        "main runs made with other settings (the headline's).",
        dict(DEFAULT_DENOISER),
    ),
    "anchor_prototypes_sees_prototypes_x0": Ablation(
        "The default's denoiser predicting x_0 instead of the noise. Its learned projection of p does not depend "
        "on t; E[x_0 | p] does not either, while the noise it implies is scaled by sqrt(abar_t / (1 - abar_t)), "
        "which grows without bound as t -> 0. Measured (benchmarks.headline): below chance at every seed and "
        "shot count (docs/findings.md, 'What matters', 4).",
        {**DEFAULT_DENOISER, "metadiff.tcunet.prediction": "x0"},
    ),
    "anchor_prototypes_sees_gated_prototypes_x0": Ablation(
        "The default's denoiser predicting x0, with its projection of p gated by t (condition "
        "normalized_gradient_and_gated_prototypes): the fix tried for the x0-predictor that sees p and falls "
        "below chance, whose projection of p enters every reverse step the same way.",
        {**DEFAULT_DENOISER, "metadiff.tcunet.condition": "normalized_gradient_and_gated_prototypes", "metadiff.tcunet.prediction": "x0"},
    ),
    "condition_none": Ablation(
        "Conditioning: none; the denoiser sees W_t and t only (unconditional diffusion over classifier weights).",
        {"metadiff.tcunet.condition": "none"},
    ),
    "condition_prototypes": Ablation(
        "Conditioning: W_t and the support prototypes as inputs of a learned layer, instead of the support gradient.",
        {"metadiff.tcunet.condition": "prototypes"},
    ),
    "cosine_schedule": Ablation(
        "The default's denoiser trained and sampled with the cosine noise schedule (Nichol & Dhariwal) instead "
        "of the reference's linear one.",
        {**DEFAULT_DENOISER, "metadiff.schedule": "cosine"},
    ),
    "timesteps_100": Ablation(
        "The default's denoiser with T = 100 diffusion steps instead of 1,000 (linear betas scaled by 1000 / T, "
        "so the last step's noise level is the same), trained and sampled with 100 steps.",
        {**DEFAULT_DENOISER, "metadiff.timesteps": 100},
    ),
    "steps_x3": Ablation(
        "The default's denoiser trained three times as long as the main run (60,000 outer steps of 8 episodes "
        "against the default's 20,000).",
        {**DEFAULT_DENOISER, "metadiff.steps": lambda main: 3 * main.metadiff.steps},
    ),
    "depth_3": Ablation(
        "The default's denoiser with three narrow residual blocks in a row instead of the reference's one "
        "(metadiff.tcunet.depth).",
        {**DEFAULT_DENOISER, "metadiff.tcunet.depth": 3},
    ),
    "finetuned_targets": Ablation(
        "The default's denoiser trained towards ProtoDiff-style targets: each training episode's prototypes "
        "fine-tuned on its labelled support and queries, instead of the base classes' means.",
        {**DEFAULT_DENOISER, "metadiff.targets": "finetuned_prototypes"},
    ),
    "episode_transformer": Ablation(
        "A denoiser that sees the whole support set (denoiser.EpisodeTransformer): class tokens attend to each "
        "other and to their own class's support examples, anchored at the prototypes (W - p diffused from N(p, I)).",
        {"metadiff.denoiser": "episode_transformer", "metadiff.episode_transformer.anchor": "prototypes"},
    ),
    "untrained_denoiser": Ablation(
        "The denoiser as initialised, never trained: what the reference code evaluated (its EMA was never updated).",
        {"metadiff.steps": 0},
    ),
    "ema_off": Ablation("Sample with the denoiser's last parameters instead of their EMA.", {"metadiff.evaluate_ema": False}),
    "evaluate_best": Ablation(
        "Training length chosen on validation: test the EMA parameters of the checkpoint best on validation "
        "episodes (metadiff.evaluate = best) instead of the final ones.",
        {"metadiff.evaluate": "best"},
    ),
    "sampler_ddpm_stochastic": Ablation(
        "Sampler: ancestral (stochastic) DDPM, all T steps with the noise term, instead of the deterministic mean.",
        {"metadiff.sampler.method": "ddpm"},
    ),
    "start_prototypes": Ablation("Start the reverse process from the support prototypes instead of Gaussian noise.", {"metadiff.sampler.start": "prototypes"}),
    "sampler_ddim_50_zero": Ablation(
        "Estimator: DDIM over 50 steps from the noise's mean (x_T = 0) instead of a draw: the deterministic map's "
        "image of the mean start, the exact mean of p(W | support) for a Gaussian target.",
        {"metadiff.sampler.method": "ddim", "metadiff.sampler.steps": 50, "metadiff.sampler.start": "zero"},
    ),
    "sampler_ddim_50_draws_8": Ablation(
        "Estimator: the mean of 8 DDIM-50 draws' weights (each from its own noise), an estimate of the mean of "
        "p(W | support), instead of one draw.",
        {"metadiff.sampler.method": "ddim", "metadiff.sampler.steps": 50, "metadiff.sampler.draws": 8},
    ),
}

# A sweep: DDIM (eta = 0) with fewer steps than the T steps of the deterministic DDPM mean.
ABLATIONS.update(
    {
        f"sampler_ddim_{steps}": Ablation(
            f"Sampler: DDIM (eta = 0) over {steps} of the T steps, instead of all T steps of the deterministic DDPM mean.",
            {"metadiff.sampler.method": "ddim", "metadiff.sampler.steps": steps},
        )
        for steps in (10, 50, 100)
    }
)


# MetaDiff's learning-rate grid (rivals.py's rule for every learned row: the rate is chosen on validation),
# the default's 1e-4 being the main run. On synthetic features the same network trained as a one-step
# regressor learns a linear map slowly at 1e-4.
ABLATIONS.update(
    {
        f"learning_rate_{name}": Ablation(
            f"The default's denoiser trained with Adam at {rate:g} instead of the reference's 1e-4 (the rest of its rule, "
            "early stopping on validation, as the main run's).",
            {**DEFAULT_DENOISER, "metadiff.learning_rate": rate},
        )
        for name, rate in (("1e5", 1e-5), ("3e5", 3e-5), ("3e4", 3e-4), ("1e3", 1e-3), ("3e3", 3e-3), ("1e2", 1e-2))
    }
)


def apply(config, ablation: Ablation, main_config) -> None:
    """Sets the ablation's keys in `config` (a copy of `main_config`), functions of the main config resolved."""
    for key, value in ablation.keys.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        if name not in node:
            raise KeyError(f"{key}: the config has no such key")
        node[name] = value(main_config) if callable(value) else value
