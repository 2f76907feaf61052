"""MetaDiff training: noise-prediction loss over task weights, class-mean targets, EMA, the outer step.

Trained like any diffusion model: per episode one t ~ U{0..T-1} and eps ~ N(0, I) of the weights' shape,
x_0 = W0 - origin (denoiser.origin: 0, or the support prototypes), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t)
eps, loss = mean (eps_hat(x_t, t, support) - eps)^2 (or, for an x0-predicting denoiser, mean (x0_hat - x_0)^2).
Nothing is differentiated through the sampling loop, so memory does not depend on T.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metadiff_jax import base_learner, keys
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax import schedule as schedule_lib


class TrainBatch(NamedTuple):
    """A batch of training episodes over features.

    support_features: float32 `(episodes, n_support, dim)`; support_labels: int32 `(episodes, n_support)`;
    targets: float32 `(episodes, ways, dim)`, W0 of each episode (its classes' rows of the target table).
    """

    support_features: jnp.ndarray
    support_labels: jnp.ndarray
    targets: jnp.ndarray
    # Only where the loss needs the query set (the query loss, fine-tuned targets): `(episodes, n_query, dim)`, `(episodes, n_query)`.
    query_features: jnp.ndarray | None = None
    query_labels: jnp.ndarray | None = None


class TrainState(NamedTuple):
    """Everything the outer loop carries: a plain pytree.

    diverged_at: -1 while every loss and gradient was finite; else the step whose loss or gradient was not.
    From then on the step changes nothing, so the state stays the last good one.
    """

    step: jnp.ndarray
    params: Any
    ema_params: Any
    opt_state: Any
    diverged_at: jnp.ndarray


# What a training step minimises: (params, batch, rng, first_episode) -> (loss, metrics). `first_episode` is
# the index of the batch's first episode in the step (a device's offset under shard_map), so that episode i
# draws its randomness from keys.episode_keys whichever device holds it.
LossFn = Callable[[Any, TrainBatch, jax.Array, Any], tuple[jnp.ndarray, dict]]


def class_mean_targets(features, class_starts) -> np.ndarray:
    """W0 table: the mean feature of every class over ALL its examples, `(num_classes, dim)`.

    features: `(num_images, dim)` grouped by class as in a ClassIndexedSplit (class c is
    features[class_starts[c]:class_starts[c+1]]).
    """
    features = np.asarray(features, np.float64)
    sums = np.add.reduceat(features, np.asarray(class_starts[:-1]), axis=0)
    return (sums / np.diff(class_starts)[:, None]).astype(np.float32)


def finetuned_prototype_targets(batch: TrainBatch, steps: int = 10, learning_rate: float = 0.5) -> jnp.ndarray:
    """W0 of each episode as ProtoDiff makes it: prototypes fine-tuned on the episode's labelled support and
    query features (`base_learner.finetuned_prototypes`), instead of the class means over all images."""
    ways = batch.targets.shape[1]
    features = jnp.concatenate([batch.support_features, batch.query_features], axis=1)
    labels = jnp.concatenate([batch.support_labels, batch.query_labels], axis=1)
    return jax.vmap(lambda f, y: base_learner.finetuned_prototypes(f, y, ways, steps, learning_rate))(features, labels)


def make_optimizer(learning_rate: float = 1e-4, weight_decay: float = 5e-4) -> optax.GradientTransformation:
    """Adam with L2 weight decay added to the gradient, as torch.optim.Adam(weight_decay=...) in the reference."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))


def ema_update(ema_params, params, step, decay: float, start: int):
    """EMA after `step` updates: a plain copy while step < start, then ema <- decay ema + (1 - decay) params."""
    effective = jnp.where(step < start, 0.0, decay)
    return jax.tree_util.tree_map(lambda e, p: effective * e + (1.0 - effective) * p, ema_params, params)


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        # Copies: the jitted step donates the state, which must not delete the caller's arrays.
        params=jax.tree_util.tree_map(jnp.copy, params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        opt_state=optimizer.init(params),
        diverged_at=jnp.full((), -1, jnp.int32),
    )


def diffusion_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule, params, batch: TrainBatch, rng, first_episode=0):
    """Noise-prediction MSE (x_0-prediction MSE for prediction "x0") averaged over episodes and weight
    entries, one uniform t per episode.

    The batch's episode i is episode `first_episode + i` of the step and draws its t and noise from that
    episode's key (keys.episode_keys), so a device holding a slice of the batch draws what one device
    holding all of it would.
    """
    episode_keys = keys.first_episodes(rng, batch.targets.shape[0], first_episode)

    def episode_loss(key, target, support_features, support_labels):
        t_key, noise_key = jax.random.split(key)
        t = jax.random.randint(t_key, (), 0, schedule.num_timesteps)
        noise = jax.random.normal(noise_key, target.shape, target.dtype)
        x0 = target - denoiser_lib.origin(denoiser, support_features, support_labels, target.shape[0])
        predicted = denoiser.apply(params, schedule_lib.q_sample(schedule, x0, t, noise), t, support_features, support_labels)
        return jnp.mean((predicted - (x0 if denoiser_lib.predicts_x0(denoiser) else noise)) ** 2)

    return jnp.mean(jax.vmap(episode_loss)(episode_keys, batch.targets, batch.support_features, batch.support_labels))


def make_loss(denoiser: nn.Module, schedule: schedule_lib.NoiseSchedule) -> LossFn:
    """MetaDiff's training loss as a LossFn: `diffusion_loss`, with no other metrics."""
    return lambda params, batch, rng, first_episode: (diffusion_loss(denoiser, schedule, params, batch, rng, first_episode), {})


def with_targets(loss_fn: LossFn, targets_from_batch: Callable[[TrainBatch], jnp.ndarray]) -> LossFn:
    """`loss_fn` with the batch's targets W0 replaced by a function of the batch (e.g.
    `finetuned_prototype_targets`), computed inside the step and treated as constants."""

    def loss(params, batch: TrainBatch, rng, first_episode):
        return loss_fn(params, batch._replace(targets=jax.lax.stop_gradient(targets_from_batch(batch))), rng, first_episode)

    return loss


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, ema_decay: float = 0.999, ema_start: int = 200, axis_name: str | None = None
) -> Callable[[TrainState, TrainBatch, jax.Array], tuple[TrainState, dict]]:
    """The outer step, a pure function of (state, batch, rng); randomness is fold_in(rng, step).

    `loss_fn(params, batch, rng, first_episode) -> (loss, metrics)` is what is minimised: MetaDiff's
    (`make_loss`), the one-step regressor's (`regressor.make_loss`), or either wrapped (`with_targets`,
    `query_loss.add_query_loss`). Returns (new state, metrics with `loss`, `grad_norm` and the loss's own). A
    non-finite loss or gradient leaves the state as it was and records the step in `diverged_at`. Not jitted
    here, so callers can jit it with their own shardings and donation (see `jit_train_step` and
    `parallel.data_parallel_step`).

    With `axis_name` the step is one device's program under shard_map: the batch is this device's slice of
    the episodes (slice i of the mesh axis holds episodes i * local .. (i + 1) * local - 1, and draws their
    randomness as one device would), and the loss, its parts, the gradients and the health flag are averaged
    with lax.pmean over the axis before the update, so every device applies the same update.
    """

    def train_step(state: TrainState, batch: TrainBatch, rng) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(rng, state.step)
        first_episode = 0 if axis_name is None else jax.lax.axis_index(axis_name) * batch.targets.shape[0]
        params = state.params
        if axis_name is not None:
            # Differentiated as this device's own copy: the gradient is then its slice's, not (as JAX's transpose
            # of a replicated input would make it) already summed over the devices; the pmean below averages it.
            params = jax.lax.pcast(params, axis_name, to="varying")
        (loss, parts), grads = jax.value_and_grad(lambda p: loss_fn(p, batch, step_rng, first_episode), has_aux=True)(params)
        healthy = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        if axis_name is not None:
            loss, parts, grads = jax.lax.pmean((loss, parts, grads), axis_name)
            # Every device's own loss and gradients finite, not just their mean.
            healthy = jax.lax.pmean(healthy.astype(jnp.float32), axis_name) == 1.0
        grad_norm = optax.tree.norm(grads)
        healthy = healthy & (state.diverged_at < 0)

        def update(state: TrainState) -> TrainState:
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            step = state.step + 1
            ema_params = ema_update(state.ema_params, params, step, ema_decay, ema_start)
            return TrainState(step, params, ema_params, opt_state, state.diverged_at)

        def keep(state: TrainState) -> TrainState:
            return state._replace(diverged_at=jnp.where(state.diverged_at >= 0, state.diverged_at, state.step))

        # A cond, not a select per leaf: selecting 4 trees of 22 leaves costs more than the update itself on CPU.
        return jax.lax.cond(healthy, update, keep, state), {"loss": loss, "grad_norm": grad_norm, **parts}

    return train_step


def jit_train_step(train_step):
    """jit with the state donated: parameters, EMA and optimizer state are updated in place."""
    return jax.jit(train_step, donate_argnums=0)
