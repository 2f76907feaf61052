"""Sample with the denoiser's last parameters instead of their EMA."""


def apply(config):
    config.metadiff.evaluate_ema = False
