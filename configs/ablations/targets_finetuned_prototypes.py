"""Targets: ProtoDiff-style prototypes fine-tuned on each labelled training episode, instead of class means."""


def apply(config):
    config.metadiff.targets = "finetuned_prototypes"
