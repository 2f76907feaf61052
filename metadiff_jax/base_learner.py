"""The base learner whose weights MetaDiff denoises: a cosine classifier over `(ways, dim)` weights.

Shapes are for ONE task; vmap over episodes at the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def class_counts(labels, ways: int):
    """Images per class in a support set: `(ways,)` float32."""
    return jax.nn.one_hot(labels, ways, dtype=jnp.float32).sum(axis=0)


def prototypes(features, labels, ways: int):
    """p_k = mean of the support features of class k: `(n, d), (n,) -> (ways, d)`."""
    one_hot = jax.nn.one_hot(labels, ways, dtype=features.dtype)
    return (one_hot.T @ features) / jnp.maximum(one_hot.sum(axis=0), 1.0)[:, None]


def cosine_logits(weights, features, scale: float = 10.0):
    """logits_ik = scale * cos(x_i, W_k): `(ways, d), (m, d) -> (m, ways)`."""
    normalize = lambda x: x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))
    return scale * normalize(features) @ normalize(weights).T


def support_loss(weights, features, labels):
    """L_S(W) = sum_i sum_k y_ik ||W_k - x_i||^2, the reference's conditioning loss."""
    ways = weights.shape[0]
    squared = jnp.sum((weights[None, :, :] - features[:, None, :]) ** 2, axis=-1)  # (n, ways)
    return jnp.sum(squared * jax.nn.one_hot(labels, ways, dtype=weights.dtype))


def support_gradient(weights, features, labels):
    """dL_S/dW_k = 2 n_k (W_k - p_k), in closed form (2K (W - p) with K shots a class); no autodiff."""
    ways = weights.shape[0]
    one_hot = jax.nn.one_hot(labels, ways, dtype=weights.dtype)
    counts = one_hot.sum(axis=0)[:, None]
    return 2.0 * (counts * weights - one_hot.T @ features)


def accuracy(logits, labels):
    """Fraction of argmax(logits) == labels."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def finetuned_prototypes(features, labels, ways: int, steps: int = 10, learning_rate: float = 0.5, scale: float = 10.0):
    """ProtoDiff-style "overfitted" prototypes of a labelled task: the prototypes of `features`, then `steps`
    gradient steps of the cosine classifier's cross-entropy on those same labelled features: `(ways, d)`."""
    def loss(weights):
        logits = cosine_logits(weights, features, scale)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))

    step = lambda _, weights: weights - learning_rate * jax.grad(loss)(weights)
    return jax.lax.fori_loop(0, steps, step, prototypes(features, labels, ways))
