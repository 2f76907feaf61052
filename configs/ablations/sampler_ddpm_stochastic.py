"""Sampler: ancestral (stochastic) DDPM, all T steps with the noise term, instead of the deterministic mean."""


def apply(config):
    config.metadiff.sampler.method = "ddpm"
