"""Anchored at the prototypes, and the denoiser sees where the class sits: W - p plus a learned projection
of p (condition normalized_gradient_and_prototypes), the information a ridge map uses."""


def apply(config):
    config.metadiff.anchor = "prototypes"
    config.metadiff.condition = "normalized_gradient_and_prototypes"
