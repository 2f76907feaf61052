"""Conditioning: none; the denoiser sees W_t and t only (unconditional diffusion over classifier weights)."""


def apply(config):
    config.metadiff.condition = "none"
