"""The default's denoiser (anchored, seeing p) trained with Adam at 1e-3 instead of the reference's 1e-4: on
synthetic features the same network trained as a one-step regressor learns a linear map slowly at 1e-4."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.learning_rate = 1e-3
