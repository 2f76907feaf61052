"""The default's denoiser predicting x0, with its projection of p gated by t
(condition normalized_gradient_and_gated_prototypes): the fix README suggests for the x0-predictor that sees
p and falls below chance (anchor_prototypes_sees_prototypes_x0), whose projection of p enters every reverse
step the same way."""


def apply(config):
    config.metadiff.anchor = "prototypes"
    config.metadiff.condition = "normalized_gradient_and_gated_prototypes"
    config.metadiff.prediction = "x0"
