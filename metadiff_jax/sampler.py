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
Start: W_T ~ N(0, I) ("noise", the reference) or the support prototypes ("prototypes").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metadiff_jax import base_learner
from metadiff_jax import diffusion as diffusion_lib
from metadiff_jax import keys as keys_lib
from metadiff_jax import schedule as schedule_lib

SAMPLERS = ("ddpm_mean", "ddpm", "ddim", "one_step")
STARTS = ("noise", "prototypes")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    method: str = "ddpm_mean"
    steps: int | None = None  # ddim only: how many steps (None: T); ddpm methods always take all T
    start: str = "noise"

    def __post_init__(self):
        if self.method not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.method!r}; known: {', '.join(SAMPLERS)}.")
        if self.start not in STARTS:
            raise ValueError(f"Unknown sampler start {self.start!r}; known: {', '.join(STARTS)}.")

    def validate(self, num_timesteps: int) -> None:
        """The checks that need the schedule's T."""
        if self.steps is not None and not 1 <= self.steps <= num_timesteps:
            raise ValueError(
                f"Cannot sample with {self.steps} steps: the schedule has T = {num_timesteps} timesteps. "
                f"Use 1 to {num_timesteps} steps."
            )
        if self.method == "one_step" and self.steps not in (None, 1):
            raise ValueError("one_step is one forward pass of the one-step regressor; leave steps unset.")
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
    step. Not jitted: jit or vmap it at the caller with `ways` static (see `sample_episodes`).
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
        start_key, noise_key = jax.random.split(rng)
        if config.start == "noise":
            weights = jax.random.normal(start_key, (ways, support_features.shape[-1]), support_features.dtype)
        else:
            weights = base_learner.prototypes(support_features, support_labels, ways)
        eps_hat = lambda w, t: denoiser.apply(params, w, t, support_features, support_labels)

        if config.method == "ddim":

            def step(w, coefficient):
                w = schedule_lib.ddim_step(coefficient, w, eps_hat(w, coefficient.timesteps))
                return w, observe(w) if observe else None

            xs = coefficients
        else:

            def step(w, xs):
                t, key = xs
                w = schedule_lib.ddpm_mean(schedule, w, t, eps_hat(w, t))
                if config.method == "ddpm":
                    noise = jax.random.normal(key, w.shape, w.dtype)
                    w = w + jnp.where(t > 0, jnp.sqrt(schedule.betas[t]), 0.0) * noise
                return w, observe(w) if observe else None

            xs = (timesteps, jax.random.split(noise_key, num_timesteps))
        weights, observed = jax.lax.scan(step, weights, xs)
        return (weights, observed) if observe else weights

    return sample_task


def sample_episodes(sample_task, params, support_features, support_labels, rng, ways: int, episode_ids=None):
    """vmap of a per-task sampler over episodes: `(E, n, d), (E, n)` -> `(E, ways, d)` (and observations).

    Episode i gets the key fold_in(rng, episode_ids[i]) (default ids 0 .. E-1), so its sample does not depend
    on which other episodes share its batch or device.
    """
    if episode_ids is None:
        episode_ids = jnp.arange(support_features.shape[0])
    keys = keys_lib.episode_keys(rng, episode_ids)
    return jax.vmap(lambda f, y, k: sample_task(params, f, y, k, ways))(support_features, support_labels, keys)
