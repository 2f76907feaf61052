"""A differentiable sampler: the query-set loss of task weights sampled by K DDIM steps, as a function of the
denoiser's parameters that can be differentiated end to end.

MetaDiff itself never differentiates through its reverse process; this is the tool for asking what doing so
buys (a query loss added to the diffusion loss, `diffusion.make_train_step(query_loss=...)`) and what it
costs. The K steps are a DDIM (eta = 0) subsequence of the schedule's T timesteps, run as a `lax.scan`:

- `remat=True` wraps each step in `jax.checkpoint`: the backward pass keeps only the K carried weight
  matrices and recomputes one step's denoiser activations at a time, instead of storing every step's;
- `backprop_steps=k` backpropagates through the last k steps only (truncated backpropagation): the first
  K - k steps run on stopped parameters and nothing of them is kept for the backward pass.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import optax

from metadiff_jax import base_learner, keys
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax import sampler as sampler_lib
from metadiff_jax import schedule as schedule_lib
from metadiff_jax.config_dict import FieldError

STARTS = sampler_lib.STARTS


@dataclasses.dataclass(frozen=True)
class QueryLossConfig:
    weight: float = 0.0  # the query loss's weight beside the diffusion loss; 0 is MetaDiff as published (off)
    steps: int = 10  # K: DDIM steps from the start to the sampled weights
    backprop_steps: int | None = None  # k: backpropagate through the last k steps only (None: all K)
    remat: bool = True  # jax.checkpoint on each step
    start: str = "noise"  # "noise" (x_T ~ N(0, I)), "zero" (x_T = 0) or "prototypes" (W_T = p), as sampler.initial_x
    scale: float = 10.0  # the cosine classifier's logit scale

    def __post_init__(self):
        if self.weight < 0:
            raise FieldError("weight", f"must be 0 (off) or more, got {self.weight}.")
        if self.steps < 1:
            raise FieldError("steps", f"K = {self.steps} must be at least 1.")
        if self.backprop_steps is not None and not 1 <= self.backprop_steps <= self.steps:
            raise FieldError("backprop_steps", f"k = {self.backprop_steps} must be in 1 .. K = {self.steps} (or unset for all K).")
        if self.start not in STARTS:
            raise FieldError("start", f"{self.start!r} is unknown; known: {', '.join(STARTS)}.")

    def validate(self, num_timesteps: int) -> None:
        """The checks that need the schedule's T."""
        if self.steps > num_timesteps:
            raise FieldError("steps", f"K = {self.steps} must be in 1 .. T = {num_timesteps}.")


def make_task_query_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule, config: QueryLossConfig = QueryLossConfig()):
    """Returns query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways)
    for ONE task: the cross-entropy of the cosine classifier with the sampled weights on the query set."""
    config.validate(schedule.num_timesteps)
    coefficients = schedule_lib.ddim_coefficients(schedule, schedule_lib.ddim_timesteps(schedule.num_timesteps, config.steps))
    total = len(coefficients.timesteps)
    tracked = total if config.backprop_steps is None else min(config.backprop_steps, total)
    frozen_part = jax.tree_util.tree_map(lambda c: c[: total - tracked], coefficients)
    tracked_part = jax.tree_util.tree_map(lambda c: c[total - tracked :], coefficients)

    def ddim_step(params, weights, coefficient, support_features, support_labels):
        eps = denoiser_lib.noise_estimate(denoiser, schedule, params, weights, coefficient.timesteps, support_features, support_labels)
        return schedule_lib.ddim_step(coefficient, weights, eps)

    step = jax.checkpoint(ddim_step) if config.remat else ddim_step

    def run(params, weights, part, support_features, support_labels, remat_step):
        body = lambda w, coefficient: (remat_step(params, w, coefficient, support_features, support_labels), None)
        return jax.lax.scan(body, weights, part)[0]

    def query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways: int):
        origin = denoiser_lib.origin(denoiser, support_features, support_labels, ways)
        weights = sampler_lib.initial_x(config.start, rng, support_features, support_labels, origin)
        if total > tracked:
            # Stopped parameters: the first K - k steps are constants of the backward pass, nothing is kept.
            weights = run(jax.lax.stop_gradient(params), weights, frozen_part, support_features, support_labels, ddim_step)
        weights = origin + run(params, weights, tracked_part, support_features, support_labels, step)
        logits = base_learner.cosine_logits(weights, query_features, config.scale)
        return optax.softmax_cross_entropy_with_integer_labels(logits, query_labels).mean()

    return query_loss


def make_query_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule, config: QueryLossConfig = QueryLossConfig()):
    """Returns query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways,
    first_episode=0): the mean over a batch of episodes (leading axis) of the per-task loss; the batch's
    episode i is episode first_episode + i of the stream and starts from its key (keys.episode_keys)."""
    task_loss = make_task_query_loss(denoiser, schedule, config)

    def query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways: int, first_episode=0):
        episode_keys = keys.first_episodes(rng, support_features.shape[0], first_episode)
        per_task = jax.vmap(lambda s, sl, q, ql, k: task_loss(params, s, sl, q, ql, k, ways))(
            support_features, support_labels, query_features, query_labels, episode_keys
        )
        return per_task.mean()

    return query_loss
