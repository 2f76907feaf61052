"""Estimator: DDIM over 50 steps from the noise's mean (x_T = 0) instead of a draw: the deterministic map's
image of the mean start, the exact mean of p(W | support) for a Gaussian target."""


def apply(config):
    config.metadiff.sampler.method = "ddim"
    config.metadiff.sampler.steps = 50
    config.metadiff.sampler.start = "zero"
