"""Sampling task weights: ONE reverse-process loop (a `lax.scan`) that runs any registered step rule.

A sampler is a step rule (`StepRule`) in the registry SAMPLERS: the timesteps it visits, its coefficients
for each of them (its parameters), and how one step moves x. The rules here:
  ddpm_mean  the reference: all T steps of the DDPM mean, no noise term,
             x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t);
             with `steps` < T, the same over the respaced process of an evenly spaced subsequence;
  ddpm       the same plus sqrt(beta_t) z, z ~ N(0, I), for t > 0 (ancestral sampling);
  ddim       eta = 0 over an evenly spaced decreasing subsequence tau of `steps` timesteps,
             x0_hat = (x - sqrt(1 - abar_tau_i) eps_hat) / sqrt(abar_tau_i),
             x <- sqrt(abar_tau_{i+1}) x0_hat + sqrt(1 - abar_tau_{i+1}) eps_hat   (abar = 1 after the last);
  linear     x <- a_i x + b_i eps_hat over DDIM's timesteps, (a_i, b_i) DDIM's own to start with: the
             form a learned sampler takes (metadiff_jax/learned_sampler.py).
Adding a sampler is one update function and one registry entry (README, "Using the library"). The loop
acts on x = W - origin (denoiser.origin: 0, or the prototypes for an anchored denoiser) with the denoiser's
noise estimate (denoiser.noise_estimate), and starts from a rule of the registry STARTS: x_T ~ N(0, I)
("noise", the reference), its mean x_T = 0 ("zero"), or W_T = the support prototypes ("prototypes").

The same loop serves evaluation and the query loss (metadiff_jax/query_loss.py): `make_sample_task(...,
remat=True)` wraps each step in `jax.checkpoint`, and `backprop_steps=k` runs the first steps on stopped
parameters, so every registered sampler is differentiable end to end, with respect to the denoiser's
parameters and to the sampler's own coefficients.

The estimator. ddim and ddpm are samplers: each draw is a sample of the learned p(W | support). ddpm_mean
is not: for a Gaussian target it collapses every start onto the target's mean (tests/test_sampler.py states
the covariance it gives), which is what a classifier wants. `draws` > 1 returns the mean of that many draws'
weights (each from its own start and noise), an estimate of the mean of p(W | support) for any sampler;
start "zero" with ddim gives the image of the noise's mean under the deterministic map, the exact mean for a
Gaussian target.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metadiff_jax import base_learner
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax import keys as keys_lib
from metadiff_jax import schedule as schedule_lib


class StepRule(NamedTuple):
    """One sampler.

    plan(schedule, steps) -> (timesteps int32 `(S,)`, strictly decreasing, the t at which the denoiser is
      read at each step; coefficients, a pytree of per-step float arrays with leading axis S). `steps` is the
      config's (None: the rule's own default); a rule that cannot take that many steps raises ValueError.
      The coefficients are the sampler's parameters: `make_sample_task`'s tasks take others in their place,
      and are differentiable with respect to them (a learned sampler, metadiff_jax/learned_sampler.py).
    update(schedule, t, coefficients, x_t, eps_hat, noise) -> the next x, for one draw: x_t and eps_hat
      `(ways, dim)`, `coefficients` this step's slice of the plan's arrays, `noise` a standard normal draw of
      x's shape when `stochastic` (None otherwise).
    """

    plan: Callable[[schedule_lib.NoiseSchedule, int | None], tuple[jnp.ndarray, Any]]
    update: Callable[..., jnp.ndarray]
    stochastic: bool = False


def ddpm_plan(schedule: schedule_lib.NoiseSchedule, steps: int | None):
    """All T timesteps (None or T: the reference's chain), or `steps` evenly spaced ones of the respaced
    process (schedule.ddpm_coefficients), with their DDPM coefficients."""
    num_timesteps = schedule.num_timesteps
    if steps in (None, num_timesteps):
        timesteps = np.arange(num_timesteps - 1, -1, -1)
    else:
        timesteps = schedule_lib.ddim_timesteps(num_timesteps, steps)
    return jnp.asarray(timesteps, jnp.int32), schedule_lib.ddpm_coefficients(schedule, timesteps)


def ddim_plan(schedule: schedule_lib.NoiseSchedule, steps: int | None):
    """`steps` evenly spaced timesteps from T-1 to 0 (all T when None), and their DDIM coefficients."""
    coefficients = schedule_lib.ddim_coefficients(schedule, schedule_lib.ddim_timesteps(schedule.num_timesteps, steps or schedule.num_timesteps))
    # The timesteps are the loop's (integers, not parameters); the step reads the square roots only.
    return coefficients.timesteps, coefficients._replace(timesteps=None)


def linear_plan(schedule: schedule_lib.NoiseSchedule, steps: int | None):
    """DDIM's timesteps, and DDIM's steps written as linear steps: the starting point of a learned sampler."""
    timesteps = schedule_lib.ddim_timesteps(schedule.num_timesteps, steps or schedule.num_timesteps)
    return jnp.asarray(timesteps, jnp.int32), schedule_lib.linear_coefficients_of_ddim(schedule, timesteps)


def ddpm_mean_update(schedule, t, coefficients, x_t, eps_hat, noise):
    return schedule_lib.ddpm_step(coefficients, x_t, eps_hat)


def ddpm_update(schedule, t, coefficients, x_t, eps_hat, noise):
    return schedule_lib.ddpm_step(coefficients, x_t, eps_hat) + coefficients.noise_scale * noise


def ddim_update(schedule, t, coefficients, x_t, eps_hat, noise):
    return schedule_lib.ddim_step(coefficients, x_t, eps_hat)


def linear_update(schedule, t, coefficients, x_t, eps_hat, noise):
    return coefficients.x_scale * x_t + coefficients.eps_scale * eps_hat


SAMPLERS: dict[str, StepRule] = {
    "ddpm_mean": StepRule(ddpm_plan, ddpm_mean_update),
    "ddpm": StepRule(ddpm_plan, ddpm_update, stochastic=True),
    "ddim": StepRule(ddim_plan, ddim_update),
    "linear": StepRule(linear_plan, linear_update),
}


def start_from_noise(key, support_features, support_labels, origin):
    return jax.random.normal(key, origin.shape, origin.dtype)


def start_from_zero(key, support_features, support_labels, origin):
    return jnp.zeros_like(origin)


def start_from_prototypes(key, support_features, support_labels, origin):
    """x_T = p - origin, so that W_T is the support prototypes."""
    return base_learner.prototypes(support_features, support_labels, origin.shape[0]) - origin


# Name -> x_T of one draw, `(ways, dim)` like `origin`, from (key, support_features, support_labels, origin).
STARTS: dict[str, Callable] = {"noise": start_from_noise, "zero": start_from_zero, "prototypes": start_from_prototypes}


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    method: str = "ddpm_mean"  # a name in SAMPLERS
    steps: int | None = None  # how many steps (None: all T; fewer: an evenly spaced subsequence of the T)
    start: str = "noise"  # a name in STARTS
    draws: int = 1  # the weights returned are the mean of this many draws (1: one draw, the reference)

    def __post_init__(self):
        if self.method not in SAMPLERS:
            raise ValueError(f"Unknown sampler {self.method!r}; known: {', '.join(SAMPLERS)}.")
        if self.start not in STARTS:
            raise ValueError(f"Unknown sampler start {self.start!r}; known: {', '.join(STARTS)}.")
        if self.draws < 1:
            raise ValueError(f"draws must be at least 1 (the number of samples averaged), got {self.draws}.")

    def plan(self, schedule: schedule_lib.NoiseSchedule):
        """The rule's (timesteps, coefficients) on this schedule; a ValueError naming the fix if it cannot
        (the launch layer calls it to check a config before long work)."""
        if self.steps is not None and not 1 <= self.steps <= schedule.num_timesteps:
            raise ValueError(
                f"Cannot sample with {self.steps} steps: the schedule has T = {schedule.num_timesteps} timesteps. "
                f"Use 1 to {schedule.num_timesteps} steps."
            )
        try:
            return SAMPLERS[self.method].plan(schedule, self.steps)
        except ValueError as error:
            raise ValueError(f"{self.method}: {error}") from error


def make_sample_task(
    denoiser: nn.Module,
    schedule: schedule_lib.NoiseSchedule,
    config: SamplerConfig = SamplerConfig(),
    *,
    remat: bool = False,
    backprop_steps: int | None = None,
):
    """Returns sample_task(params, support_features, support_labels, rng, ways, observe=None, coefficients=None)
    for ONE task.

    support_features `(n, dim)`, support_labels `(n,)` -> sampled weights `(ways, dim)`; with `observe` (a
    function of the weights after each step, e.g. a query accuracy) also its stacked outputs, one per step
    (of the mean weights over draws). `coefficients` replaces the rule's planned per-step coefficients
    (`initial_coefficients`: the same pytree, e.g. learned ones). Not jitted: jit or vmap it at the caller
    with `ways` static (see `sample_episodes`).

    For differentiating through the sampler (the query loss): `remat` wraps each step in `jax.checkpoint`
    (the backward pass keeps only the carried weights and recomputes one step's activations at a time);
    `backprop_steps=k` backpropagates through the last k steps only: the first ones run on stopped
    parameters, and nothing of them is kept for the backward pass.
    """
    rule = SAMPLERS[config.method]
    timesteps, planned = config.plan(schedule)
    num_steps = len(timesteps)
    if backprop_steps is not None and not 1 <= backprop_steps <= num_steps:
        raise ValueError(f"backprop_steps k = {backprop_steps} must be in 1 .. {num_steps}, the sampler's steps (or unset for all).")
    tracked = num_steps if backprop_steps is None else backprop_steps

    def sample_task(params, support_features, support_labels, rng, ways: int, observe: Callable[[jnp.ndarray], Any] | None = None, coefficients=None):
        origin = denoiser_lib.origin(denoiser, support_features, support_labels, ways)
        draw_keys = rng[None] if config.draws == 1 else jax.random.split(rng, config.draws)
        start_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(draw_keys), 1, 0)
        x = jax.vmap(lambda key: STARTS[config.start](key, support_features, support_labels, origin))(start_keys)
        # Per step, one key per draw: `(steps, draws)`.
        step_keys = jnp.moveaxis(jax.vmap(lambda key: jax.random.split(key, num_steps))(noise_keys), 1, 0)
        watch = (lambda x: observe(origin + x.mean(axis=0))) if observe else (lambda x: None)

        def step(params, x, inputs):
            t, coefficient, keys = inputs
            eps_hat = jax.vmap(
                lambda x, t: denoiser_lib.noise_estimate(denoiser, schedule, params, x, t, support_features, support_labels), in_axes=(0, None)
            )(x, t)
            noise = jax.vmap(lambda key: jax.random.normal(key, x.shape[1:], x.dtype))(keys) if rule.stochastic else None
            x = rule.update(schedule, t, coefficient, x, eps_hat, noise)
            return x, watch(x)

        inputs = (timesteps, planned if coefficients is None else coefficients, step_keys)
        frozen = jax.tree_util.tree_map(lambda a: a[: num_steps - tracked], inputs)
        followed = jax.tree_util.tree_map(lambda a: a[num_steps - tracked :], inputs)
        early = None
        if tracked < num_steps:
            stopped = jax.lax.stop_gradient(params)
            x, early = jax.lax.scan(lambda x, xs: step(stopped, x, xs), x, frozen)
        tracked_step = jax.checkpoint(step) if remat else step
        x, late = jax.lax.scan(lambda x, xs: tracked_step(params, x, xs), x, followed)
        weights = origin + x.mean(axis=0)
        if not observe:
            return weights
        if early is None:
            return weights, late
        return weights, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), early, late)

    return sample_task


def initial_coefficients(schedule: schedule_lib.NoiseSchedule, config: SamplerConfig):
    """The rule's own per-step coefficients on this schedule: the sampler's parameters before any learning."""
    return config.plan(schedule)[1]


def sample_episodes(sample_task, params, support_features, support_labels, rng, ways: int, episode_ids=None):
    """vmap of a per-task sampler over episodes: `(E, n, d), (E, n)` -> `(E, ways, d)`.

    Episode i gets the key fold_in(rng, episode_ids[i]) (default ids 0 .. E-1), so its sample does not depend
    on which other episodes share its batch or device.
    """
    if episode_ids is None:
        episode_ids = jnp.arange(support_features.shape[0])
    keys = keys_lib.episode_keys(rng, episode_ids)
    return jax.vmap(lambda f, y, k: sample_task(params, f, y, k, ways))(support_features, support_labels, keys)
