"""The default's denoiser (anchored, seeing p) trained three times as long: 60,000 outer steps of 8
episodes instead of 20,000."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.steps = 60_000
