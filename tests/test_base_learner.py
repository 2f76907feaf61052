import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import base_learner as bl


@pytest.mark.parametrize("labels", [[0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0, 2]])
def test_analytic_support_gradient_equals_autodiff(labels):
    labels = jnp.array(labels)
    key_w, key_x = jax.random.split(jax.random.PRNGKey(0))
    weights = jax.random.normal(key_w, (3, 8))
    features = jax.random.normal(key_x, (len(labels), 8))
    np.testing.assert_allclose(bl.support_gradient(weights, features, labels), jax.grad(bl.support_loss)(weights, features, labels), rtol=1e-5, atol=1e-5)


def test_support_gradient_is_2k_times_weights_minus_prototypes():
    labels = jnp.repeat(jnp.arange(4), 5)
    features = jax.random.normal(jax.random.PRNGKey(1), (20, 6))
    weights = jax.random.normal(jax.random.PRNGKey(2), (4, 6))
    p = bl.prototypes(features, labels, 4)
    np.testing.assert_allclose(p[2], features[10:15].mean(0), rtol=1e-5)
    np.testing.assert_allclose(bl.support_gradient(weights, features, labels), 2 * 5 * (weights - p), rtol=1e-5, atol=1e-5)


def test_cosine_logits_ignore_norms_and_peak_at_the_scale():
    weights = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    features = jnp.array([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])
    logits = bl.cosine_logits(weights, features, scale=10.0)
    np.testing.assert_allclose(logits[:2], [[10.0, 0.0], [0.0, 10.0]], atol=1e-5)
    np.testing.assert_allclose(logits[2], [10 / np.sqrt(2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(bl.cosine_logits(weights, features, scale=3.0), 0.3 * logits, rtol=1e-5)
    assert float(bl.accuracy(logits[:2], jnp.array([0, 1]))) == 1.0


def test_finetuned_prototypes_start_at_the_prototypes_and_lower_the_labelled_loss():
    import optax

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 6).astype(np.int32)
    features = (rng.standard_normal((4, 16))[labels] + 0.8 * rng.standard_normal((24, 16))).astype(np.float32)
    loss = lambda w: float(optax.softmax_cross_entropy_with_integer_labels(bl.cosine_logits(w, features), labels).mean())
    start = bl.finetuned_prototypes(features, labels, 4, steps=0)
    np.testing.assert_allclose(start, bl.prototypes(features, labels, 4), rtol=1e-6)
    tuned = bl.finetuned_prototypes(features, labels, 4, steps=10)
    assert loss(tuned) < 0.9 * loss(start)
