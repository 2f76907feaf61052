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


def test_tcunet_width_multiplies_the_hidden_sizes():
    base = dn.init_params(dn.make_denoiser("tcunet", 64), jax.random.PRNGKey(0))["params"]
    wide = dn.init_params(dn.make_denoiser("tcunet", 64, width=4), jax.random.PRNGKey(0))["params"]
    shapes = lambda params: sorted(tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim == 2)
    assert (64, 32) in shapes(base) and (64, 128) in shapes(wide) and (64, 32) not in shapes(wide)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        dn.make_denoiser("tcunet", 64, width=0)


def test_tcunet_depth_repeats_the_narrow_residual_block():
    model = dn.make_denoiser("tcunet", 64, time_dim=16)
    deep = dn.make_denoiser("tcunet", 64, time_dim=16, depth=3)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    deep_params = dn.init_params(deep, jax.random.PRNGKey(0))
    narrow, linear = 16, lambda i, o: i * o + o
    assert dn.count_params(deep_params) - dn.count_params(params) == 2 * (linear(narrow, narrow) + linear(16, narrow))
    weights, support = jax.random.normal(jax.random.PRNGKey(1), (5, 64)), jax.random.normal(jax.random.PRNGKey(2), (5, 64))
    inputs = (weights, jnp.array(7), support, jnp.arange(5))
    assert bool(jnp.all(jnp.isfinite(deep.apply(deep_params, *inputs))))
    assert float(jnp.max(jnp.abs(deep.apply(deep_params, *inputs) - model.apply(params, *inputs)))) > 0
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        dn.make_denoiser("tcunet", 64, depth=0)


def _episode(ways, shots, dim, seed=0):
    rng = np.random.default_rng(seed)
    support = jnp.asarray(rng.standard_normal((ways * shots, dim)), jnp.float32)
    return jnp.asarray(rng.standard_normal((ways, dim)), jnp.float32), support, jnp.repeat(jnp.arange(ways), shots)


def test_episode_transformer_starts_at_eps_equal_x_and_is_equivariant_over_classes():
    model = dn.make_denoiser("episode_transformer", 16, anchor="prototypes", hidden=32, heads=2)
    x_t, support, labels = _episode(5, 3, 16)
    params = dn.init_params(model, jax.random.PRNGKey(0), 5, 3)
    np.testing.assert_array_equal(model.apply(params, x_t, 10, support, labels), x_t)  # zero read-out at init
    # Any trained state: perturb every parameter, then permute the classes and the support's order.
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
    out = model.apply(params, x_t, 10, support, labels)
    assert float(jnp.abs(out - x_t).max()) > 1e-2
    order = jnp.array([3, 0, 4, 1, 2])
    relabel = jnp.argsort(order)  # new label of each old class
    np.testing.assert_allclose(model.apply(params, x_t[order], 10, support, relabel[labels]), out[order], atol=1e-5)
    shuffle = jnp.asarray(np.random.default_rng(2).permutation(15))
    np.testing.assert_allclose(model.apply(params, x_t, 10, support[shuffle], labels[shuffle]), out, atol=1e-5)


def test_episode_transformer_reads_each_class_s_spread_not_only_its_mean():
    # Two support sets with the same prototypes but a different spread in class 0: a TCUNet sees only
    # the prototypes (through W - p), the transformer sees the examples themselves.
    x_t, support, labels = _episode(5, 2, 8)
    spread = support.at[0].add(1.0).at[1].add(-1.0)  # class 0's two examples move apart, same mean
    outputs = {}
    for name, kwargs in (("tcunet", dict(condition="normalized_gradient")), ("episode_transformer", dict(hidden=16, heads=2))):
        model = dn.make_denoiser(name, 8, anchor="prototypes", **kwargs)
        params = dn.init_params(model, jax.random.PRNGKey(0), 5, 2)
        params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
        outputs[name] = [model.apply(params, x_t, 10, s, labels) for s in (support, spread)]
    np.testing.assert_allclose(*outputs["tcunet"], atol=1e-5)
    assert float(jnp.abs(outputs["episode_transformer"][0] - outputs["episode_transformer"][1]).max()) > 1e-3


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
    with pytest.raises(ValueError, match="Unknown denoiser 'unet'; known: episode_transformer, tcunet"):
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


def test_gated_projection_of_p_is_off_when_its_gate_closes_and_the_plain_projection_when_it_opens():
    dim, ways = 8, 3
    gated = dn.make_denoiser("tcunet", dim, time_dim=16, condition="normalized_gradient_and_gated_prototypes", anchor="prototypes")
    plain = dn.make_denoiser("tcunet", dim, time_dim=16, condition="normalized_gradient_and_prototypes", anchor="prototypes")
    params = dn.init_params(gated, jax.random.PRNGKey(0), ways=ways, shots=2)
    x_t = jax.random.normal(jax.random.PRNGKey(1), (ways, dim))
    labels = jnp.repeat(jnp.arange(ways), 2)
    support = jax.random.normal(jax.random.PRNGKey(2), (2 * ways, dim)) + 3.0

    def with_gate(bias, projection):
        inner = dict(params["params"])
        inner["Dense_0"] = {**inner["Dense_0"], "kernel": projection * jnp.eye(dim)}
        inner["Dense_1"] = {"kernel": jnp.zeros_like(inner["Dense_1"]["kernel"]), "bias": jnp.full((1,), bias)}
        return {"params": inner}

    def plain_params(projection):
        inner = {k: v for k, v in with_gate(0.0, projection)["params"].items() if k != "Dense_1"}
        return {"params": inner}

    closed = gated.apply(with_gate(-30.0, 1.0), x_t, jnp.int32(5), support, labels)
    opened = gated.apply(with_gate(30.0, 1.0), x_t, jnp.int32(5), support, labels)
    np.testing.assert_allclose(closed, plain.apply(plain_params(0.0), x_t, jnp.int32(5), support, labels), atol=1e-5)
    np.testing.assert_allclose(opened, plain.apply(plain_params(1.0), x_t, jnp.int32(5), support, labels), atol=1e-5)
    assert float(jnp.max(jnp.abs(opened - closed))) > 0.1
