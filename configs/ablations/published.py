"""MetaDiff as published: the reference's support gradient 2K (W - p) as condition, W diffused from N(0, I)
(anchor zero), noise prediction, T = 1000, the deterministic DDPM mean, the final EMA parameters."""


def apply(config):
    config.metadiff.condition = "gradient"
    config.metadiff.anchor = "zero"
    config.metadiff.prediction = "eps"
    config.metadiff.timesteps = 1000
    config.metadiff.schedule = "linear"
    config.metadiff.sampler.method = "ddpm_mean"
    config.metadiff.sampler.steps = None
    config.metadiff.sampler.start = "noise"
    config.metadiff.sampler.draws = 1
    config.metadiff.evaluate = "final"
