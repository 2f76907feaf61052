"""Conditioning: W_t and the support prototypes as inputs of a learned layer, instead of the support gradient."""


def apply(config):
    config.metadiff.condition = "prototypes"
