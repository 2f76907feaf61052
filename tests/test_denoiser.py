import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import base_learner as bl
from metadiff_jax import denoiser as dn


def test_tcunet_at_512_has_the_reference_parameter_count():
    params = dn.init_params(dn.make_denoiser("tcunet", 512), jax.random.PRNGKey(0))
    assert dn.count_params(params) == 807_745


@pytest.mark.parametrize("dim", [64, 640])
def test_tcunet_widths_scale_with_the_feature_dim(dim):
    params = dn.init_params(dn.make_denoiser("tcunet", dim), jax.random.PRNGKey(0))
    wide, narrow, time = dim // 2, dim // 4, 320
    linear = lambda i, o: i * o + o
    expected = (
        linear(time, time // 2) + linear(time // 2, 1)
        + linear(dim, wide) + linear(time, wide) + linear(wide, narrow) + linear(time, narrow)
        + linear(narrow, narrow) + linear(time, narrow) + linear(narrow, wide) + linear(time, wide)
        + linear(wide, dim) + linear(time, dim)
    )
    assert dn.count_params(params) == expected


@pytest.mark.parametrize("ways, shots", [(5, 1), (3, 2), (10, 5)])
def test_any_ways_and_shots(ways, shots):
    model = dn.make_denoiser("tcunet", 32)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    labels = jnp.repeat(jnp.arange(ways), shots)
    out = model.apply(params, jnp.ones((ways, 32)), jnp.array(7), jnp.ones((ways * shots, 32)), labels)
    assert out.shape == (ways, 32) and bool(jnp.all(jnp.isfinite(out)))


def test_support_enters_only_through_the_gradient():
    # g = 2K (W - p) is unchanged when W and every support feature move together, so eps_hat is too.
    model = dn.make_denoiser("tcunet", 16)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    weights, support = jax.random.normal(k1, (5, 16)), jax.random.normal(k2, (10, 16))
    shift = jax.random.normal(k3, (16,))
    labels = jnp.repeat(jnp.arange(5), 2)
    a = model.apply(params, weights, jnp.array(300), support, labels)
    b = model.apply(params, weights + shift, jnp.array(300), support + shift, labels)
    np.testing.assert_allclose(a, b, atol=1e-4)
    other_t = model.apply(params, weights, jnp.array(10), support, labels)
    assert float(jnp.abs(a - other_t).max()) > 1e-3


def test_untrained_output_leans_on_the_gradient():
    # At init the gate is about 1/2 and eps_hat = s g + (1 - s) h5 with h5 = ... + g: the estimate points
    # along g, which is why an untrained denoiser pulls W to the prototypes.
    model = dn.make_denoiser("tcunet", 64)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    weights, support = jax.random.normal(jax.random.PRNGKey(1), (5, 64)), jax.random.normal(jax.random.PRNGKey(2), (5, 64))
    labels = jnp.arange(5)
    eps = model.apply(params, weights, jnp.array(500), support, labels)
    g = bl.support_gradient(weights, support, labels)
    cosine = jnp.sum(eps * g) / (jnp.linalg.norm(eps) * jnp.linalg.norm(g))
    assert float(cosine) > 0.9


def test_timestep_embedding_formula():
    emb = dn.timestep_embedding(jnp.array(0), 320)
    np.testing.assert_allclose(emb, np.concatenate([np.ones(160), np.zeros(160)]))
    emb = dn.timestep_embedding(jnp.array(37), 320)
    freqs = 10000.0 ** (-np.arange(160) / 160)
    np.testing.assert_allclose(emb, np.concatenate([np.cos(37 * freqs), np.sin(37 * freqs)]), atol=2e-5)


def test_registry_names_the_known_denoisers():
    with pytest.raises(ValueError, match="Unknown denoiser 'unet'; known: tcunet"):
        dn.make_denoiser("unet", 64)


@pytest.mark.parametrize("condition", ["prototypes", "none"])
def test_ablation_conditions_build_and_only_the_conditioned_one_reads_the_support(condition):
    model = dn.make_denoiser("tcunet", 8, time_dim=16, condition=condition)
    params = dn.init_params(model, jax.random.PRNGKey(0), ways=3, shots=2)
    weights = jax.random.normal(jax.random.PRNGKey(1), (3, 8))
    labels = jnp.repeat(jnp.arange(3), 2)
    support = jax.random.normal(jax.random.PRNGKey(2), (6, 8))
    first = model.apply(params, weights, jnp.int32(5), support, labels)
    second = model.apply(params, weights, jnp.int32(5), support + 1.0, labels)
    assert first.shape == (3, 8) and bool(jnp.all(jnp.isfinite(first)))
    assert bool(jnp.any(first != second)) == (condition == "prototypes")
