"""A denoiser that sees the whole support set (denoiser.EpisodeTransformer): class tokens attend to each
other and to their own class's support examples, anchored at the prototypes (W - p diffused from N(p, I))."""


def apply(config):
    config.metadiff.denoiser = "episode_transformer"
    config.metadiff.anchor = "prototypes"
