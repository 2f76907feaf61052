"""Estimator: the mean of 8 DDIM-50 draws' weights (each from its own noise), an estimate of the mean of
p(W | support), instead of one draw."""


def apply(config):
    config.metadiff.sampler.method = "ddim"
    config.metadiff.sampler.steps = 50
    config.metadiff.sampler.draws = 8
