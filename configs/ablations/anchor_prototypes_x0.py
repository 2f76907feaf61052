"""Anchored at the prototypes, and the denoiser predicts the clean residual x_0 instead of the noise."""


def apply(config):
    config.metadiff.anchor = "prototypes"
    config.metadiff.prediction = "x0"
