"""The denoiser as initialised, never trained: what the reference code evaluated (its EMA was never updated)."""


def apply(config):
    config.metadiff.steps = 0
