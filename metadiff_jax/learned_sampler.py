"""A learned few-step sampler: a sampler rule's per-step coefficients, trained by differentiating the query
loss through the sampler on base-class episodes, with the denoiser frozen.

The design. The timesteps stay those of the rule's plan (K evenly spaced of the T); what is learned is the
rule's coefficients (`sampler.initial_coefficients`), the sampler's parameters in this library. The default
rule, "linear", moves x <- a_i x + b_i eps_hat at step i: 2K numbers, starting at DDIM's (eta = 0) own steps,
so the untrained sampler is DDIM with K steps. This is the idea of Watson et al. (2021, "Learning fast
samplers for diffusion models by differentiating through sample quality"), a few-step sampler's
coefficients learned through the sampler, with the few-shot classifier's query loss as the measure of
quality: the same loss and loop as query_loss.py, each step rematerialised. Any registered rule can be
learned the same way (`LearnedSamplerConfig.method`): DDIM's square roots, the DDPM mean's coefficients.

A learned sampler is its coefficients, a pytree of arrays: save and restore it like any model
(checkpoints.save_tree, and checkpoints.restore_tree with `sampler.initial_coefficients` as the template),
and sample with it through `sampler.make_sample_task(...)(..., coefficients=learned)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metadiff_jax import config_dict, diffusion, loop, train
from metadiff_jax import query_loss as query_loss_lib
from metadiff_jax import sampler as sampler_lib
from metadiff_jax import schedule as schedule_lib
from metadiff_jax.config_dict import FieldError
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


@dataclasses.dataclass(frozen=True)
class LearnedSamplerConfig:
    method: str = "linear"  # the rule whose coefficients are learned (a name in sampler.SAMPLERS)
    steps: int = 10  # K
    start: str = "zero"  # a name in sampler.STARTS; "zero" makes the sampler a deterministic map of the support set
    # Adam's rate on the coefficients, the steps and the logit scale: benchmarks.learned_sampler's choice for
    # K = 10 at 1 shot on the default dataset's validation episodes.
    learning_rate: float = 3e-4
    train_steps: int = 1000
    batch_size: int = 16  # base-class episodes a step
    scale: float = 10.0  # the cosine classifier's logit scale
    seed: int = 0

    def __post_init__(self):
        if self.method not in sampler_lib.SAMPLERS:
            raise FieldError("method", f"{self.method!r} is unknown; known: {', '.join(sampler_lib.SAMPLERS)}.")
        config_dict.check_counts(self, "steps", "train_steps", "batch_size")
        if self.learning_rate <= 0:
            raise FieldError("learning_rate", f"must be positive, got {self.learning_rate}.")

    @property
    def sampler(self) -> sampler_lib.SamplerConfig:
        return sampler_lib.SamplerConfig(self.method, self.steps, self.start)

    @property
    def query_loss(self) -> query_loss_lib.QueryLossConfig:
        return query_loss_lib.QueryLossConfig(1.0, self.method, self.steps, remat=True, start=self.start, scale=self.scale)


class SamplerState(NamedTuple):
    """What the sampler's training carries: the step, the coefficients learned, Adam's state, and the frozen
    denoiser's parameters (carried, not trained, so that the step is one compiled program of them all)."""

    step: Any
    coefficients: Any
    opt_state: Any
    denoiser_params: Any


def make_train_step(denoiser, schedule: schedule_lib.NoiseSchedule, config: LearnedSamplerConfig):
    """The step (state, batch, rng) -> (state, {"loss"}): Adam on the coefficients of the query loss of a
    batch of episodes (diffusion.TrainBatch with its query set), the denoiser's parameters held fixed."""
    loss = query_loss_lib.make_query_loss(denoiser, schedule, config.query_loss)
    optimizer = optax.adam(config.learning_rate)

    def step(state: SamplerState, batch: diffusion.TrainBatch, rng):
        def batch_loss(coefficients):
            frozen = jax.lax.stop_gradient(state.denoiser_params)
            ways = batch.targets.shape[1]
            episode_rng = jax.random.fold_in(rng, state.step)
            return loss(frozen, batch.support_features, batch.support_labels, batch.query_features, batch.query_labels, episode_rng, ways, 0, coefficients)

        value, grads = jax.value_and_grad(batch_loss)(state.coefficients)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.coefficients)
        return SamplerState(state.step + 1, optax.apply_updates(state.coefficients, updates), opt_state, state.denoiser_params), {"loss": value}

    return step, optimizer


def train_sampler(
    denoiser, schedule: schedule_lib.NoiseSchedule, denoiser_params, split: ClassIndexedSplit, spec: episodes_lib.EpisodeSpec, config: LearnedSamplerConfig,
    progress: bool = True,
):
    """Learns the sampler's coefficients on episodes of `split` (base-class features, grouped by class).

    Returns (coefficients, query loss per step). The episodes are the training stream MetaDiff's own
    training draws (train.training_batches, with their query sets), from `config.seed`.
    """
    step, optimizer = make_train_step(denoiser, schedule, config)
    initial = sampler_lib.initial_coefficients(schedule, config.sampler)
    # Copies: the jitted step donates its state, which must not delete the caller's parameters.
    state = SamplerState(np.zeros((), np.int32), initial, optimizer.init(initial), jax.tree_util.tree_map(jnp.copy, denoiser_params))
    targets = diffusion.class_mean_targets(split.images, split.class_starts)

    def batches_from(first_step: int):
        return train.training_batches(split, targets, spec, config.batch_size, config.seed, first_step, with_queries=True)

    state, losses = loop.checkpointed_loop(
        jax.jit(step, donate_argnums=0),
        state,
        batches_from,
        config.train_steps,
        jax.random.PRNGKey(config.seed),
        check=lambda state, metrics: loop.raise_if_diverged(state, metrics, "Learning the sampler"),
        progress=progress,
        description=f"Learning {config.method}-{config.steps}",
    )
    return state.coefficients, losses
