"""Prototypical networks (Snell et al. 2017): the backbone trained episodically with prototype logits.

logits_ik = -||f(x_i) - p_k||^2 with p_k the mean support feature of class k. Batch norm uses the batch's
statistics in training and, by default, evaluation alike (as the gradient-based family here does), so the
two are compared on equal terms; `transductive=False` classifies each query alone at test time. The
frozen-backbone prototype classifier of Meta-Baseline (cosine, scale 10) is
`metadiff_jax.evaluate.prototype_weights` and needs no training.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metadiff_jax import base_learner


class ProtoState(NamedTuple):
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any


class ProtoNetLearner:
    """meta_train_step(state, episodes, rng) and adapt(state, support_x, support_y) -> prototypes."""

    def __init__(self, backbone: nn.Module, ways: int, learning_rate: float = 1e-3, transductive: bool = True):
        """`transductive`: at test time, queries normalised with their own batch's statistics (True) or each
        alone with the support set (False; see gradient.GradientMetaConfig.transductive)."""
        self.backbone = backbone
        self.ways = ways
        self.optimizer = optax.adam(learning_rate)
        self.transductive = transductive

    def init(self, rng, example_x) -> ProtoState:
        variables = self.backbone.init(rng, example_x, train=False)
        return ProtoState(jnp.zeros((), jnp.int32), variables["params"], variables.get("batch_stats", {}), self.optimizer.init(variables["params"]))

    def _features(self, params, batch_stats, x):
        return self.backbone.apply({"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"])[0]

    def _logits(self, params, batch_stats, support_x, support_y, query_x):
        prototypes = base_learner.prototypes(self._features(params, batch_stats, support_x), support_y, self.ways)
        query = self._features(params, batch_stats, query_x)
        return -jnp.sum((query[:, None, :] - prototypes[None]) ** 2, axis=-1)

    def episode_loss(self, params, batch_stats, support_x, support_y, query_x, query_y):
        logits = self._logits(params, batch_stats, support_x, support_y, query_x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, query_y).mean(), jnp.mean(jnp.argmax(logits, -1) == query_y)

    def meta_train_step(self, state: ProtoState, episodes, rng=None, axis_name: str | None = None):
        """One outer step; with `axis_name`, `episodes` is one device's share and the update is the batch's
        (as gradient.GradientMetaLearner.meta_train_step)."""
        del rng

        def loss_fn(params):
            losses, accuracies = jax.vmap(lambda *e: self.episode_loss(params, state.batch_stats, *e))(*episodes)
            return losses.mean(), accuracies.mean()

        params = state.params
        if axis_name is not None:
            # This device's own copy: its gradient is its episodes' (JAX would sum a replicated input's over devices).
            params = jax.lax.pcast(params, axis_name, to="varying")
        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        if axis_name is not None:
            loss, accuracy, grads = jax.lax.pmean((loss, accuracy, grads), axis_name)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        return ProtoState(state.step + 1, optax.apply_updates(state.params, updates), state.batch_stats, opt_state), {"loss": loss, "accuracy": accuracy}

    def adapt(self, state: ProtoState, support_x, support_y):
        return base_learner.prototypes(self._features(state.params, state.batch_stats, support_x), support_y, self.ways)

    def query_accuracy(self, state: ProtoState, support_x, support_y, query_x, query_y):
        if self.transductive:
            return self.episode_loss(state.params, state.batch_stats, support_x, support_y, query_x, query_y)[1]
        prototypes = self.adapt(state, support_x, support_y)
        one = lambda q: self._features(state.params, state.batch_stats, jnp.concatenate([support_x, q[None]]))[-1]
        logits = -jnp.sum((jax.vmap(one)(query_x)[:, None, :] - prototypes[None]) ** 2, axis=-1)
        return jnp.mean(jnp.argmax(logits, -1) == query_y)
