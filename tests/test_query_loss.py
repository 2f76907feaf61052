"""The query loss through the sampler's own loop: its gradient against finite differences for every
registered sampler, truncation and rematerialisation, and the training mode that adds it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import denoiser, diffusion, query_loss, sampler, schedule

WAYS, SHOTS, QUERIES, DIM = 3, 2, 4, 8


@pytest.fixture(scope="module")
def problem():
    model = denoiser.make_denoiser("tcunet", DIM, time_dim=16)
    params = denoiser.init_params(model, jax.random.PRNGKey(0), WAYS, SHOTS)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((WAYS, DIM)).astype(np.float32)
    support_labels = np.repeat(np.arange(WAYS), SHOTS).astype(np.int32)
    query_labels = np.repeat(np.arange(WAYS), QUERIES).astype(np.int32)
    support = centres[support_labels] + 0.3 * rng.standard_normal((WAYS * SHOTS, DIM)).astype(np.float32)
    query = centres[query_labels] + 0.3 * rng.standard_normal((WAYS * QUERIES, DIM)).astype(np.float32)
    return model, params, (support, support_labels, query, query_labels, jax.random.PRNGKey(1))


# A short schedule, so that a test can differentiate through every one of its steps cheaply.
SHORT = schedule.from_betas(np.linspace(0.05, 0.5, 6))


def loss_fn(model, config, task, noise=None):
    loss = query_loss.make_task_query_loss(model, schedule.linear_schedule(100) if noise is None else noise, config)
    return lambda params, coefficients=None: loss(params, *task, WAYS, coefficients)


def _along(function, point, seed, epsilon=1e-6):
    """(directional derivative of `function` at `point` along a random direction by jax.grad, and by central
    finite differences of step `epsilon`); run in float64, where the difference is not lost to rounding."""
    gradient = jax.grad(function)(point)
    direction = jax.tree_util.tree_map(lambda p, k: jax.random.normal(k, p.shape, jnp.float64), point, _keys(point, seed))
    along = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(gradient), jax.tree_util.tree_leaves(direction)))
    shifted = lambda step: jax.tree_util.tree_map(lambda p, d: p + step * d, point, direction)
    return along, (float(function(shifted(epsilon))) - float(function(shifted(-epsilon)))) / (2 * epsilon)


@pytest.mark.parametrize("method, steps", [("ddpm_mean", None), ("ddpm_mean", 3), ("ddpm", 3), ("ddim", 4), ("linear", 4)])
def test_gradient_through_every_registered_sampler_matches_finite_differences(problem, method, steps):
    """With respect to the denoiser's parameters and to the sampler's own coefficients (a fixed key, so the
    stochastic rule's noise is the same on both sides of the difference)."""
    assert {m for m, _ in [("ddpm_mean", None), ("ddpm", 3), ("ddim", 4), ("linear", 4)]} == set(sampler.SAMPLERS)
    model, params, task = problem
    config = query_loss.QueryLossConfig(method=method, steps=steps)
    with jax.enable_x64(True):
        as64 = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)
        params, task, coefficients = as64(params), as64(task[:4]) + (task[4],), as64(sampler.initial_coefficients(SHORT, config.sampler))
        loss = loss_fn(model, config, task, SHORT)
        for name, along, finite in (
            ("denoiser parameters", *_along(lambda p: loss(p, coefficients), params, 7)),
            ("sampler coefficients", *_along(lambda c: loss(params, c), coefficients, 8)),
        ):
            assert abs(along) > 1e-4, name  # the check has something to check
            np.testing.assert_allclose(along, finite, rtol=1e-4, err_msg=name)


def _keys(tree, seed=7):
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(structure, list(jax.random.split(jax.random.PRNGKey(seed), len(leaves))))


def test_rematerialisation_changes_memory_not_the_gradient(problem):
    model, params, task = problem
    remat = jax.grad(loss_fn(model, query_loss.QueryLossConfig(steps=6, remat=True), task))(params)
    stored = jax.grad(loss_fn(model, query_loss.QueryLossConfig(steps=6, remat=False), task))(params)
    for a, b in zip(jax.tree_util.tree_leaves(remat), jax.tree_util.tree_leaves(stored)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_truncated_backpropagation_keeps_the_loss_and_drops_the_early_steps_gradient(problem):
    model, params, task = problem
    full = loss_fn(model, query_loss.QueryLossConfig(steps=6), task)
    last_two = loss_fn(model, query_loss.QueryLossConfig(steps=6, backprop_steps=2), task)
    assert float(full(params)) == pytest.approx(float(last_two(params)), rel=1e-5)  # the same forward pass
    full_gradient = jax.tree_util.tree_leaves(jax.grad(full)(params))
    truncated_gradient = jax.tree_util.tree_leaves(jax.grad(last_two)(params))
    difference = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(full_gradient, truncated_gradient))
    assert difference > 1e-4
    every_step = jax.tree_util.tree_leaves(jax.grad(loss_fn(model, query_loss.QueryLossConfig(steps=6, backprop_steps=6), task))(params))
    for a, b in zip(full_gradient, every_step):  # k = K is no truncation
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bad_query_loss_settings_are_refused():
    with pytest.raises(ValueError, match="backprop_steps"):
        query_loss.QueryLossConfig(steps=5, backprop_steps=6)
    with pytest.raises(ValueError, match="K = 200 does not fit the sampler: Cannot sample with 200 steps"):
        query_loss.QueryLossConfig(steps=200).check(schedule.linear_schedule(100))
    with pytest.raises(ValueError, match="method 'euler' is unknown"):
        query_loss.QueryLossConfig(method="euler")


def _query_batch(seed: int, episodes: int = 4):
    rng = np.random.default_rng(seed)
    targets = rng.standard_normal((episodes, WAYS, DIM)).astype(np.float32)
    labels = lambda n: np.tile(np.repeat(np.arange(WAYS, dtype=np.int32), n), (episodes, 1))
    noisy = lambda n: np.repeat(targets, n, axis=1) + 0.5 * rng.standard_normal((episodes, WAYS * n, DIM)).astype(np.float32)
    return diffusion.TrainBatch(noisy(SHOTS), labels(SHOTS), targets, noisy(QUERIES), labels(QUERIES))


def test_query_loss_training_mode_adds_the_weighted_loss_and_lowers_the_query_loss():
    model = denoiser.make_denoiser("tcunet", DIM, time_dim=16)
    noise = schedule.linear_schedule(100)
    optimizer = diffusion.make_optimizer(3e-3)
    sampled = query_loss.make_query_loss(model, noise, query_loss.QueryLossConfig(steps=5))
    loss = query_loss.add_query_loss(diffusion.make_loss(model, noise), sampled, 0.5)
    step = diffusion.jit_train_step(diffusion.make_train_step(loss, optimizer))
    state = diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0), WAYS, SHOTS), optimizer)
    held_out = _query_batch(999, episodes=16)
    evaluate = jax.jit(
        lambda p: sampled(p, held_out.support_features, held_out.support_labels, held_out.query_features, held_out.query_labels, jax.random.PRNGKey(5), WAYS)
    )
    before = float(evaluate(state.params))
    for i in range(60):
        state, metrics = step(state, _query_batch(i), jax.random.PRNGKey(1))
    assert float(metrics["loss"]) == pytest.approx(float(metrics["diffusion_loss"]) + 0.5 * float(metrics["query_loss"]), rel=1e-5)
    assert float(evaluate(state.params)) < 0.9 * before
    without_queries = diffusion.make_train_step(loss, optimizer)
    with pytest.raises(ValueError, match="query_features"):
        without_queries(state, _query_batch(0)._replace(query_features=None), jax.random.PRNGKey(1))
