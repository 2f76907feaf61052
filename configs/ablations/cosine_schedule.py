"""The default's denoiser (anchored, seeing p) trained and sampled with the cosine noise schedule (Nichol &
Dhariwal) instead of the reference's linear one, T = 1000: a lever of README's "Does MetaDiff work?"."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.schedule = "cosine"
