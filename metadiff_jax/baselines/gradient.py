"""The gradient-based family: MAML, first-order MAML, ANIL and Meta-SGD, as one parameterised algorithm.

For ONE episode: adapt the meta-parameters on the support set with `inner_steps` SGD steps (a `lax.scan`),
then score the adapted model on the query set. The outer step vmaps that over episodes and differentiates
the mean query loss with respect to the meta-parameters:
  maml     second order, through every inner step and the whole network;
  fomaml   first order: the inner gradients are treated as constants (no second-order terms);
  anil     inner loop on the linear head only (backbone features computed once), second order;
  metasgd  MAML whose per-parameter inner learning rates are meta-learned too.
Memory of `maml` and `anil` grows with inner_steps (reverse mode keeps every inner step's activations);
that is the cost MetaDiff avoids.

The backbone is any module called as backbone(x, train=True) -> features; batch norm uses the statistics of
the batch it sees (as MAML does), and its running averages are never updated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

METHODS = ("maml", "fomaml", "anil", "metasgd")


@dataclasses.dataclass(frozen=True)
class GradientMetaConfig:
    method: str = "maml"
    inner_steps: int = 5
    inner_lr: float = 0.4
    outer_lr: float = 1e-3
    # Unroll the inner loop and the episodes of an outer step into straight-line code. XLA on CPU runs a
    # convolution's gradient inside a while loop (what lax.scan / lax.map lower to) about 8x slower than
    # the same code unrolled (Conv-4, 5 inner steps, meta-batch 4: 4.8 s against 0.59 s an outer step);
    # the price is compile time growing with inner_steps x meta_batch (15 s at 5 steps, 33 s at 10).
    unroll: bool = True
    # Test-time batch norm: True normalises the queries with their own batch's statistics (transductive, as
    # in MAML's paper); False classifies each query alone, normalised with the support set plus that one
    # query (Nichol et al. 2018's non-transductive setting). Training is the same either way.
    transductive: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Unknown gradient-based method {self.method!r}; known: {', '.join(METHODS)}.")
        if self.inner_steps < 1:
            raise ValueError(f"inner_steps must be at least 1, got {self.inner_steps}.")


class FewShotNet(nn.Module):
    """Backbone + a linear head with one output per way."""

    backbone: nn.Module
    ways: int

    def setup(self):
        self.head = nn.Dense(self.ways)

    def features(self, x):
        return self.backbone(x, train=True)

    def __call__(self, x):
        return self.head(self.features(x))


class MetaState(NamedTuple):
    step: jnp.ndarray
    params: Any  # {"params": ..., "inner_lrs": ... or None}
    batch_stats: Any
    opt_state: Any


def _cross_entropy(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class GradientMetaLearner:
    """meta_train_step(state, episodes, rng) and adapt(state, support_x, support_y), as the episode API asks.

    episodes: (support_x `(E, n, ...)`, support_y `(E, n)`, query_x `(E, m, ...)`, query_y `(E, m)`).
    """

    def __init__(self, backbone: nn.Module, ways: int, config: GradientMetaConfig):
        self.config = config
        self.net = FewShotNet(backbone, ways)
        self.optimizer = optax.adam(config.outer_lr)

    def init(self, rng, example_x) -> MetaState:
        variables = self.net.init(rng, example_x)
        params = {"params": variables["params"], "inner_lrs": None}
        if self.config.method == "metasgd":
            params["inner_lrs"] = jax.tree_util.tree_map(lambda p: jnp.full_like(p, self.config.inner_lr), variables["params"])
        return MetaState(jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), self.optimizer.init(params))

    def _apply(self, params, batch_stats, x, method=None):
        variables = {"params": params, "batch_stats": batch_stats}
        return self.net.apply(variables, x, method=method, mutable=["batch_stats"])[0]

    def _inner_loop(self, meta_params, batch_stats, support_x, support_y):
        """Adapted parameters after inner_steps SGD steps on the support set (all of them, or the head's)."""
        config = self.config
        params = meta_params["params"]
        if config.method == "anil":
            features = self._apply(params, batch_stats, support_x, method=FewShotNet.features)
            head_loss = lambda head, f: _cross_entropy(self.net.apply({"params": {**params, "head": head}}, f, method=lambda m, f: m.head(f)), support_y)

            def head_step(head, _):
                grads = jax.grad(head_loss)(head, features)
                return jax.tree_util.tree_map(lambda p, g: p - config.inner_lr * g, head, grads), None

            head, _ = jax.lax.scan(head_step, params["head"], None, length=config.inner_steps, unroll=config.unroll)
            return {**params, "head": head}
        lrs = meta_params["inner_lrs"] or jax.tree_util.tree_map(lambda p: jnp.asarray(config.inner_lr, p.dtype), params)
        loss = lambda p: _cross_entropy(self._apply(p, batch_stats, support_x), support_y)

        def step(p, _):
            grads = jax.grad(loss)(p)
            if config.method == "fomaml":
                grads = jax.lax.stop_gradient(grads)
            return jax.tree_util.tree_map(lambda p, g, lr: p - lr * g, p, grads, lrs), None

        adapted, _ = jax.lax.scan(step, params, None, length=config.inner_steps, unroll=config.unroll)
        return adapted

    def episode_loss(self, meta_params, batch_stats, support_x, support_y, query_x, query_y):
        adapted = self._inner_loop(meta_params, batch_stats, support_x, support_y)
        logits = self._apply(adapted, batch_stats, query_x)
        return _cross_entropy(logits, query_y), jnp.mean(jnp.argmax(logits, -1) == query_y)

    def meta_loss(self, meta_params, batch_stats, episodes):
        # A loop over episodes, not vmap: after the inner loop every episode has its own convolution kernels,
        # and a vmapped convolution with batched kernels becomes a grouped convolution that XLA runs slowly.
        per_episode = lambda _, e: (None, self.episode_loss(meta_params, batch_stats, *e))
        _, (losses, accuracies) = jax.lax.scan(per_episode, None, episodes, unroll=self.config.unroll)
        return losses.mean(), accuracies.mean()

    def meta_train_step(self, state: MetaState, episodes, rng=None, axis_name: str | None = None):
        """One outer step over a batch of episodes; rng is unused (the algorithms are deterministic).

        With `axis_name` (inside shard_map, parallel.data_parallel_step) `episodes` is one device's share of
        the batch, and the mean loss, accuracy and gradient are averaged over that axis: the update of the
        whole batch.
        """
        del rng
        params = state.params
        if axis_name is not None:
            # This device's own copy: its gradient is its episodes' (JAX would sum a replicated input's over devices).
            params = jax.lax.pcast(params, axis_name, to="varying")
        (loss, accuracy), grads = jax.value_and_grad(self.meta_loss, has_aux=True)(params, state.batch_stats, episodes)
        if axis_name is not None:
            loss, accuracy, grads = jax.lax.pmean((loss, accuracy, grads), axis_name)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return MetaState(state.step + 1, params, state.batch_stats, opt_state), {"loss": loss, "accuracy": accuracy}

    def adapt(self, state: MetaState, support_x, support_y):
        """The task's adapted network parameters."""
        return self._inner_loop(state.params, state.batch_stats, support_x, support_y)

    def query_accuracy(self, state: MetaState, support_x, support_y, query_x, query_y):
        if self.config.transductive:
            return self.episode_loss(state.params, state.batch_stats, support_x, support_y, query_x, query_y)[1]
        adapted = self._inner_loop(state.params, state.batch_stats, support_x, support_y)
        one = lambda q: self._apply(adapted, state.batch_stats, jnp.concatenate([support_x, q[None]]))[-1]
        return jnp.mean(jnp.argmax(jax.vmap(one)(query_x), -1) == query_y)
