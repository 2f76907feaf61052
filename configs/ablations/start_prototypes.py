"""Start the reverse process from the support prototypes instead of Gaussian noise."""


def apply(config):
    config.metadiff.sampler.start = "prototypes"
