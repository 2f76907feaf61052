"""The default's denoiser (anchored, seeing p) trained towards ProtoDiff-style targets: each training
episode's prototypes fine-tuned on its labelled support and queries, instead of the base classes' means."""

from configs.ablations import anchor_prototypes_sees_prototypes


def apply(config):
    anchor_prototypes_sees_prototypes.apply(config)
    config.metadiff.targets = "finetuned_prototypes"
