"""Diffuse the residual W - p from N(p, I) (anchor prototypes) instead of W from N(0, I), with the denoiser
seeing W - p only (condition normalized_gradient): the noise it must predict then no longer depends on where
the class sits in feature space."""


def apply(config):
    config.metadiff.anchor = "prototypes"
    config.metadiff.condition = "normalized_gradient"
