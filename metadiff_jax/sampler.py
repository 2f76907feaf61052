"""Sampling task weights: the reverse diffusion loop for ONE task as a `lax.scan`, vmapped over episodes.

Methods (SAMPLERS):
  ddpm_mean  the reference: all T steps of the DDPM mean, no noise term,
             W_{t-1} = (W_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t);
  ddpm       the same plus sqrt(beta_t) z, z ~ N(0, I), for t > 0 (ancestral sampling);
  ddim       eta = 0 over an evenly spaced decreasing subsequence tau of `steps` timesteps,
             x0_hat = (W - sqrt(1 - abar_tau_i) eps_hat) / sqrt(abar_tau_i),
             W <- sqrt(abar_tau_{i+1}) x0_hat + sqrt(1 - abar_tau_{i+1}) eps_hat   (abar = 1 after the last);
  one_step   not a sampler: the one-step regressor's W = -denoiser(0, T - 1, support) (a baseline trained
             with TrainConfig.objective = "regression"; diffusion.regression_weights).
The updates act on x = W - origin (denoiser.origin: 0, or the prototypes for an anchored denoiser), with the
denoiser's noise estimate (denoiser.noise_estimate). Start: x_T ~ N(0, I) ("noise", the reference), its mean
x_T = 0 ("zero"), or W_T = the support prototypes ("prototypes").

The estimator. ddim and ddpm are samplers: each draw is a sample of the learned p(W | support). ddpm_mean
is not: for a Gaussian target it collapses every start onto the target's mean (tests/test_sampler.py states
the covariance it gives), which is what a classifier wants. `draws` > 1 returns the mean of that many draws'
weights (each from its own start and noise), an estimate of the mean of p(W | support) for any sampler;
start "zero" with ddim gives the image of the noise's mean under the deterministic map, the exact mean for a
Gaussian target.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metadiff_jax import base_learner
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax import diffusion as diffusion_lib
from metadiff_jax import keys as keys_lib
from metadiff_jax import schedule as schedule_lib

SAMPLERS = ("ddpm_mean", "ddpm", "ddim", "one_step")
STARTS = ("noise", "zero", "prototypes")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    method: str = "ddpm_mean"
    steps: int | None = None  # ddim only: how many steps (None: T); ddpm methods always take all T
    start: str = "noise"
    draws: int = 1  # the weights returned are the mean of this many draws (1: one draw, the reference)

    def __post_init__(self):
        if self.method not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.method!r}; known: {', '.join(SAMPLERS)}.")
        if self.start not in STARTS:
            raise ValueError(f"Unknown sampler start {self.start!r}; known: {', '.join(STARTS)}.")
        if self.draws < 1:
            raise ValueError(f"draws must be at least 1 (the number of samples averaged), got {self.draws}.")

    def validate(self, num_timesteps: int) -> None:
        """The checks that need the schedule's T."""
        if self.steps is not None and not 1 <= self.steps <= num_timesteps:
            raise ValueError(
                f"Cannot sample with {self.steps} steps: the schedule has T = {num_timesteps} timesteps. "
                f"Use 1 to {num_timesteps} steps."
            )
        if self.method == "one_step" and (self.steps not in (None, 1) or self.draws != 1):
            raise ValueError("one_step is one forward pass of the one-step regressor; leave steps and draws unset.")
        if self.method in ("ddpm_mean", "ddpm") and self.steps not in (None, num_timesteps):
            raise ValueError(
                f"{self.method} always runs all T = {num_timesteps} steps; for {self.steps} steps use method 'ddim'."
            )

    def num_steps(self, num_timesteps: int) -> int:
        if self.method == "one_step":
            return 1
        return num_timesteps if self.steps is None else self.steps


def make_sample_task(
    denoiser: nn.Module,
    schedule: schedule_lib.NoiseSchedule,
    config: SamplerConfig = SamplerConfig(),
    observe: Callable[[jnp.ndarray], Any] | None = None,
):
    """Returns sample_task(params, support_features, support_labels, rng, ways) for ONE task.

    support_features `(n, dim)`, support_labels `(n,)` -> sampled weights `(ways, dim)`; with `observe`
    (a function of the weights after each step, e.g. a query accuracy) also its stacked outputs, one per
    step (of the mean weights over draws). Not jitted: jit or vmap it at the caller with `ways` static (see
    `sample_episodes`).
    """
    config.validate(schedule.num_timesteps)
    num_timesteps = schedule.num_timesteps
    if config.method == "ddim":
        coefficients = schedule_lib.ddim_coefficients(
            schedule, schedule_lib.ddim_timesteps(num_timesteps, config.num_steps(num_timesteps))
        )
    timesteps = jnp.arange(num_timesteps - 1, -1, -1, dtype=jnp.int32)

    def sample_task(params, support_features, support_labels, rng, ways: int):
        if config.method == "one_step":
            weights = diffusion_lib.regression_weights(denoiser, schedule, params, support_features, support_labels, ways)
            return (weights, jax.tree_util.tree_map(lambda x: x[None], observe(weights))) if observe else weights
        origin = denoiser_lib.origin(denoiser, support_features, support_labels, ways)
        draw_keys = rng[None] if config.draws == 1 else jax.random.split(rng, config.draws)
        start_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(draw_keys), 1, 0)
        x = jax.vmap(lambda key: initial_x(config.start, key, support_features, support_labels, origin))(start_keys)
        eps_hat = jax.vmap(
            lambda x, t: denoiser_lib.noise_estimate(denoiser, schedule, params, x, t, support_features, support_labels), in_axes=(0, None)
        )
        watch = (lambda x: observe(origin + x.mean(axis=0))) if observe else (lambda x: None)

        if config.method == "ddim":

            def step(x, coefficient):
                x = schedule_lib.ddim_step(coefficient, x, eps_hat(x, coefficient.timesteps))
                return x, watch(x)

            xs = coefficients
        else:

            def step(x, xs):
                t, keys = xs
                x = schedule_lib.ddpm_mean(schedule, x, t, eps_hat(x, t))
                if config.method == "ddpm":
                    noise = jax.vmap(lambda key: jax.random.normal(key, x.shape[1:], x.dtype))(keys)
                    x = x + jnp.where(t > 0, jnp.sqrt(schedule.betas[t]), 0.0) * noise
                return x, watch(x)

            xs = (timesteps, jnp.moveaxis(jax.vmap(lambda key: jax.random.split(key, num_timesteps))(noise_keys), 1, 0))
        x, observed = jax.lax.scan(step, x, xs)
        weights = origin + x.mean(axis=0)
        return (weights, observed) if observe else weights

    return sample_task


def initial_x(start: str, key, support_features, support_labels, origin):
    """x_T of one draw, `(ways, dim)` like `origin`: N(0, I) ("noise"), 0 ("zero"), or the support prototypes
    as W_T, x_T = p - origin ("prototypes")."""
    if start == "noise":
        return jax.random.normal(key, origin.shape, origin.dtype)
    if start == "zero":
        return jnp.zeros_like(origin)
    return base_learner.prototypes(support_features, support_labels, origin.shape[0]) - origin


def sample_episodes(sample_task, params, support_features, support_labels, rng, ways: int, episode_ids=None):
    """vmap of a per-task sampler over episodes: `(E, n, d), (E, n)` -> `(E, ways, d)` (and observations).

    Episode i gets the key fold_in(rng, episode_ids[i]) (default ids 0 .. E-1), so its sample does not depend
    on which other episodes share its batch or device.
    """
    if episode_ids is None:
        episode_ids = jnp.arange(support_features.shape[0])
    keys = keys_lib.episode_keys(rng, episode_ids)
    return jax.vmap(lambda f, y, k: sample_task(params, f, y, k, ways))(support_features, support_labels, keys)
