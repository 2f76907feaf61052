"""The default's denoiser (anchored, seeing p) with three narrow residual blocks in a row instead of the
reference's one (`metadiff.depth`): a lever of README's "Does MetaDiff work?"."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.depth = 3
