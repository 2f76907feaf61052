"""Training length chosen on validation: test the EMA parameters of the checkpoint best on validation
episodes (metadiff.evaluate = best) instead of the final ones."""


def apply(config):
    config.metadiff.evaluate = "best"
