"""The default's denoiser (anchored, seeing p) with T = 100 diffusion steps instead of 1,000 (linear betas
scaled by 1000 / T, so the last step's noise level is the same), trained and sampled with 100 steps."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.timesteps = 100
