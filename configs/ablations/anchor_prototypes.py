"""Diffuse the residual W - p from N(p, I) (anchor prototypes) instead of W from N(0, I): the noise the
denoiser must predict then no longer depends on where the class sits in feature space."""


def apply(config):
    config.metadiff.anchor = "prototypes"
