"""Conditioning: the reference's support gradient 2K (W - p) instead of the normalized W - p."""


def apply(config):
    config.metadiff.condition = "gradient"
