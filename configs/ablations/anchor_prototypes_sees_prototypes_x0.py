"""The default's denoiser (anchored, seeing p) predicting x_0 instead of the noise. Its learned projection of
p does not depend on t; E[x_0 | p] does not either, while the noise it implies is scaled by
sqrt(abar_t / (1 - abar_t)), which grows without bound as t -> 0: predicting x_0 gives that term the form
that needs no cancelling across timesteps (DDIM with few steps reads the denoiser at few of them). Measured
(benchmarks.headline): below chance at every seed and shot count; README, "What matters", 4."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.prediction = "x0"
