"""The one-step regressor: MetaDiff's own denoiser trained to map a support set straight to its targets W0 in
one forward pass, with no diffusion. It is the control for "does diffusion itself add anything?": the same
network, targets, data and training, read once instead of through the reverse process.

Its weights for a task are the denoiser read at the mean of x_T ~ N(0, I) (x_T = 0) and t = T - 1:
  W = origin - denoiser(0, T - 1, support)   (a noise predictor's output read with a minus sign, as the noise
                                             estimate it would be at x_T, so that an untrained network, whose
                                             output is near its condition -p, starts near the prototypes),
  W = origin + denoiser(0, T - 1, support)   (an x0-predicting denoiser's output read as it is),
and its loss is the mean squared error of W against W0 (no randomness).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax import schedule as schedule_lib


def regression_weights(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule, params, support_features, support_labels, ways: int):
    """The one-step regressor's weights for ONE task, `(ways, dim)`."""
    zeros = jnp.zeros((ways, support_features.shape[-1]), support_features.dtype)
    output = denoiser.apply(params, zeros, schedule.num_timesteps - 1, support_features, support_labels)
    sign = 1.0 if denoiser_lib.predicts_x0(denoiser) else -1.0
    return denoiser_lib.origin(denoiser, support_features, support_labels, ways) + sign * output


def make_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule):
    """The regressor's training loss (a diffusion.LossFn): mean squared error of its weights against W0."""

    def loss_fn(params, batch, rng, first_episode):
        ways = batch.targets.shape[1]
        predicted = jax.vmap(lambda f, y: regression_weights(denoiser, schedule, params, f, y, ways))(batch.support_features, batch.support_labels)
        return jnp.mean((predicted - batch.targets) ** 2), {}

    return loss_fn


def make_predict_task(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule):
    """The regressor as a per-task weight function with the sampler's signature (`sampler.make_sample_task`):
    predict_task(params, support_features, support_labels, rng, ways, observe=None) -> weights, and with
    `observe` the one observation of its one step."""

    def predict_task(params, support_features, support_labels, rng, ways: int, observe=None):
        weights = regression_weights(denoiser, schedule, params, support_features, support_labels, ways)
        return (weights, jax.tree_util.tree_map(lambda x: x[None], observe(weights))) if observe else weights

    return predict_task
