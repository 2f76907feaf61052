"""Anchored at the prototypes, the denoiser seeing W - p only, and predicting the clean residual x_0 instead
of the noise."""


def apply(config):
    config.metadiff.anchor = "prototypes"
    config.metadiff.condition = "normalized_gradient"
    config.metadiff.prediction = "x0"
