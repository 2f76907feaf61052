"""The query loss: the query-set cross-entropy of task weights sampled through K steps of any registered
sampler, as a function of the denoiser's parameters that can be differentiated end to end.

MetaDiff itself never differentiates through its reverse process; this is the tool for asking what doing so
buys (a query loss added to the diffusion loss, `add_query_loss`) and what it costs. The K steps run in the
sampler's own loop (`sampler.make_sample_task`), the one evaluation uses, with its options for
differentiating: `remat` (`jax.checkpoint` on each step: the backward pass keeps only the K carried weight
matrices and recomputes one step's denoiser activations at a time) and `backprop_steps=k` (truncated
backpropagation: the first K - k steps run on stopped parameters and nothing of them is kept).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import optax

from metadiff_jax import base_learner, keys
from metadiff_jax import sampler as sampler_lib
from metadiff_jax import schedule as schedule_lib
from metadiff_jax.config_dict import FieldError


@dataclasses.dataclass(frozen=True)
class QueryLossConfig:
    weight: float = 0.0  # the query loss's weight beside the diffusion loss; 0 is MetaDiff as published (off)
    method: str = "ddim"  # the sampler (a name in sampler.SAMPLERS) differentiated through
    steps: int | None = 10  # K: the sampler's steps from the start to the sampled weights (None: its default)
    backprop_steps: int | None = None  # k: backpropagate through the last k steps only (None: all K)
    remat: bool = True  # jax.checkpoint on each step
    start: str = "noise"  # a name in sampler.STARTS: "noise" (x_T ~ N(0, I)), "zero" or "prototypes" (W_T = p)
    scale: float = 10.0  # the cosine classifier's logit scale

    def __post_init__(self):
        if self.weight < 0:
            raise FieldError("weight", f"must be 0 (off) or more, got {self.weight}.")
        if self.method not in sampler_lib.SAMPLERS:
            raise FieldError("method", f"{self.method!r} is unknown; known: {', '.join(sampler_lib.SAMPLERS)}.")
        if self.steps is not None and self.steps < 1:
            raise FieldError("steps", f"K = {self.steps} must be at least 1.")
        if self.backprop_steps is not None and not 1 <= self.backprop_steps <= (self.steps or self.backprop_steps):
            raise FieldError("backprop_steps", f"k = {self.backprop_steps} must be in 1 .. K = {self.steps} (or unset for all K).")
        if self.start not in sampler_lib.STARTS:
            raise FieldError("start", f"{self.start!r} is unknown; known: {', '.join(sampler_lib.STARTS)}.")

    @property
    def sampler(self) -> sampler_lib.SamplerConfig:
        return sampler_lib.SamplerConfig(self.method, self.steps, self.start)

    def check(self, schedule: schedule_lib.NoiseSchedule) -> None:
        """The checks that need the schedule: the sampler can take K steps of it."""
        try:
            self.sampler.plan(schedule)
        except ValueError as error:
            raise FieldError("steps", f"K = {self.steps} does not fit the sampler: {error}") from error


def make_task_query_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule, config: QueryLossConfig = QueryLossConfig()):
    """Returns query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways,
    coefficients=None) for ONE task: the cross-entropy of the cosine classifier with the sampled weights on
    the query set, differentiable with respect to the denoiser's `params` and to the sampler's `coefficients`
    (None: the sampler's own, `sampler.initial_coefficients`)."""
    config.check(schedule)
    sample_task = sampler_lib.make_sample_task(denoiser, schedule, config.sampler, remat=config.remat, backprop_steps=config.backprop_steps)

    def query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways: int, coefficients=None):
        weights = sample_task(params, support_features, support_labels, rng, ways, coefficients=coefficients)
        logits = base_learner.cosine_logits(weights, query_features, config.scale)
        return optax.softmax_cross_entropy_with_integer_labels(logits, query_labels).mean()

    return query_loss


def make_query_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule, config: QueryLossConfig = QueryLossConfig()):
    """Returns query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways,
    first_episode=0, coefficients=None): the mean over a batch of episodes (leading axis) of the per-task
    loss; the batch's episode i is episode first_episode + i of the stream and samples from its key
    (keys.episode_keys)."""
    task_loss = make_task_query_loss(denoiser, schedule, config)

    def query_loss(params, support_features, support_labels, query_features, query_labels, rng, ways: int, first_episode=0, coefficients=None):
        episode_keys = keys.first_episodes(rng, support_features.shape[0], first_episode)
        per_task = jax.vmap(lambda s, sl, q, ql, k: task_loss(params, s, sl, q, ql, k, ways, coefficients))(
            support_features, support_labels, query_features, query_labels, episode_keys
        )
        return per_task.mean()

    return query_loss


def add_query_loss(loss_fn, query_loss, weight: float):
    """A training loss (diffusion.LossFn) plus `weight` times `query_loss` (`make_query_loss`) on the batch's
    query set; its metrics add `diffusion_loss` (the loss without it) and `query_loss`."""

    def total_loss(params, batch, rng, first_episode):
        loss, parts = loss_fn(params, batch, rng, first_episode)
        if batch.query_features is None:
            raise ValueError("the query-loss training mode needs TrainBatch.query_features and query_labels.")
        ways = batch.targets.shape[1]
        sampled = query_loss(
            params, batch.support_features, batch.support_labels, batch.query_features, batch.query_labels, jax.random.fold_in(rng, 1), ways, first_episode
        )
        return loss + weight * sampled, {**parts, "diffusion_loss": loss, "query_loss": sampled}

    return total_loss
