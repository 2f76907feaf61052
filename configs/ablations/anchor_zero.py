"""The previous default: W diffused from N(0, I) (anchor zero) with the denoiser seeing W - p only
(condition normalized_gradient), everything else as the reference."""


def apply(config):
    config.metadiff.anchor = "zero"
    config.metadiff.condition = "normalized_gradient"
