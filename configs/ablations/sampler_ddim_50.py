"""Sampler: DDIM (eta = 0) over 50 of the T steps, instead of all T steps of the deterministic DDPM mean."""


def apply(config):
    config.metadiff.sampler.method = "ddim"
    config.metadiff.sampler.steps = 50
