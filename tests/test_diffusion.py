import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metadiff_jax import denoiser as dn
from metadiff_jax import diffusion as df
from metadiff_jax import loop
from metadiff_jax import schedule as sl

DIM, WAYS, SHOTS = 16, 5, 2


def make_batch(seed: int, episodes: int = 4) -> df.TrainBatch:
    rng = np.random.default_rng(seed)
    targets = rng.standard_normal((episodes, WAYS, DIM)).astype(np.float32)
    labels = np.tile(np.repeat(np.arange(WAYS, dtype=np.int32), SHOTS), (episodes, 1))
    support = np.repeat(targets, SHOTS, axis=1) + 0.3 * rng.standard_normal((episodes, WAYS * SHOTS, DIM)).astype(np.float32)
    return df.TrainBatch(support, labels, targets)


def setup(ema_start=2000, learning_rate=1e-3):
    model = dn.make_denoiser("tcunet", DIM)
    schedule = sl.linear_schedule(100)
    optimizer = df.make_optimizer(learning_rate)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    step = df.make_train_step(df.make_loss(model, schedule), optimizer, ema_decay=0.9, ema_start=ema_start)
    return model, schedule, optimizer, params, step


def test_class_mean_targets_average_every_example_of_a_class():
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    table = df.class_mean_targets(features, np.array([0, 2, 6]))
    np.testing.assert_allclose(table, [[1, 2], [7, 8]])


def test_optimizer_is_adam_with_l2_decay_added_to_the_gradient():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 0.1])}
    optimizer = df.make_optimizer(1e-4, 5e-4)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    decayed = np.array([0.5 + 5e-4, 0.1 - 2 * 5e-4])
    # First Adam step: m_hat = g', v_hat = g'^2, so the update is -lr * g' / (|g'| + 1e-8).
    np.testing.assert_allclose(updates["w"], -1e-4 * decayed / (np.abs(decayed) + 1e-8), rtol=1e-5)


def test_ema_is_a_copy_before_its_start_then_an_average():
    ema, params = {"w": jnp.array([0.0])}, {"w": jnp.array([1.0])}
    np.testing.assert_allclose(df.ema_update(ema, params, 5, 0.9, start=10)["w"], [1.0])
    np.testing.assert_allclose(df.ema_update(ema, params, 10, 0.9, start=10)["w"], [0.1], rtol=1e-6)


def test_training_lowers_the_loss_and_updates_the_ema_every_step():
    model, schedule, optimizer, params, step = setup(ema_start=50)
    state = df.init_state(params, optimizer)
    train_step = df.jit_train_step(step)
    rng = jax.random.PRNGKey(1)
    keys = jax.random.split(jax.random.PRNGKey(7), 8)
    evaluate = jax.jit(lambda p, b: jnp.mean(jax.vmap(lambda k: df.diffusion_loss(model, schedule, p, b, k))(keys)))
    held_out = make_batch(999, episodes=32)
    before = float(evaluate(params, held_out))
    for i in range(300):
        state, metrics = train_step(state, make_batch(i), rng)
        if i == 20:
            chex.assert_trees_all_close(state.ema_params, state.params)  # plain copy before ema_start
    assert int(state.step) == 300 and int(state.diverged_at) == -1
    after = float(evaluate(state.params, held_out))
    assert after < 0.8 * before
    difference = optax.tree.norm(jax.tree_util.tree_map(lambda a, b: a - b, state.ema_params, state.params))
    assert float(difference) > 0  # an average after ema_start, and it was updated: it is not the init
    assert float(optax.tree.norm(jax.tree_util.tree_map(lambda a, b: a - b, state.ema_params, params))) > 0


def test_the_episode_transformer_trains_through_the_same_outer_step():
    model = dn.make_denoiser("episode_transformer", DIM, anchor="zero", hidden=32, heads=2)
    schedule, optimizer = sl.linear_schedule(100), df.make_optimizer(1e-3)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    train_step = df.jit_train_step(df.make_train_step(df.make_loss(model, schedule), optimizer, ema_decay=0.9, ema_start=0))
    keys = jax.random.split(jax.random.PRNGKey(7), 8)
    evaluate = jax.jit(lambda p, b: jnp.mean(jax.vmap(lambda k: df.diffusion_loss(model, schedule, p, b, k))(keys)))
    held_out = make_batch(999, episodes=32)
    state = df.init_state(params, optimizer)
    for i in range(150):
        state, _ = train_step(state, make_batch(i), jax.random.PRNGKey(1))
    assert int(state.diverged_at) == -1
    assert float(evaluate(state.params, held_out)) < 0.8 * float(evaluate(params, held_out))


def test_outer_step_compiles_once():
    _, _, optimizer, params, step = setup()
    traced = jax.jit(chex.assert_max_traces(step, n=1), donate_argnums=0)
    state = df.init_state(params, optimizer)
    for i in range(4):
        state, _ = traced(state, make_batch(i), jax.random.PRNGKey(0))
    assert int(state.step) == 4


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_state():
    _, _, optimizer, params, step = setup()
    train_step = df.jit_train_step(step)
    state = df.init_state(params, optimizer)
    for i in range(3):
        state, _ = train_step(state, make_batch(i), jax.random.PRNGKey(0))
    good = jax.tree_util.tree_map(np.asarray, state)
    poisoned = make_batch(3)
    poisoned.support_features[0, 0, 0] = np.nan
    state, metrics = train_step(state, poisoned, jax.random.PRNGKey(0))
    assert not np.isfinite(float(metrics["loss"]))
    state, _ = train_step(state, make_batch(4), jax.random.PRNGKey(0))  # a later good batch changes nothing
    assert int(state.diverged_at) == 3 and int(state.step) == 3
    chex.assert_trees_all_equal(state.params, good.params)
    chex.assert_trees_all_equal(state.opt_state, good.opt_state)
    with pytest.raises(loop.TrainingDiverged, match="diverged at step 3.*last good one, after step 3"):
        loop.raise_if_diverged(state, metrics)


def test_finetuned_prototype_targets_replace_the_class_means_inside_the_step():
    from metadiff_jax import base_learner

    batch = make_batch(5)
    rng = np.random.default_rng(6)
    queries = np.repeat(batch.targets, 3, axis=1) + 0.3 * rng.standard_normal((4, WAYS * 3, DIM)).astype(np.float32)
    batch = batch._replace(query_features=queries, query_labels=np.tile(np.repeat(np.arange(WAYS, dtype=np.int32), 3), (4, 1)))
    untuned = df.finetuned_prototype_targets(batch, steps=0)
    every_image = np.concatenate([batch.support_features, batch.query_features], axis=1)
    labels = np.concatenate([batch.support_labels, batch.query_labels], axis=1)
    np.testing.assert_allclose(untuned[2], base_learner.prototypes(every_image[2], labels[2], WAYS), rtol=1e-5, atol=1e-6)
    model, schedule, optimizer, params, _ = setup()
    state = df.init_state(params, optimizer)
    plain = df.make_train_step(df.make_loss(model, schedule), optimizer)(state, batch, jax.random.PRNGKey(0))[1]["loss"]
    tuned = df.with_targets(df.make_loss(model, schedule), lambda b: df.finetuned_prototype_targets(b, steps=5))
    tuned_step = df.make_train_step(tuned, optimizer)
    assert float(tuned_step(state, batch, jax.random.PRNGKey(0))[1]["loss"]) != float(plain)


def test_the_train_step_updates_the_ema_exactly_once_past_its_start():
    model, schedule, optimizer, params, step = setup(ema_start=3)
    train_step = jax.jit(step)  # not donated: the states before and after are compared
    state = df.init_state(params, optimizer)
    rng = jax.random.PRNGKey(1)
    for i in range(2):
        state, _ = train_step(state, make_batch(i), rng)
    chex.assert_trees_all_equal(state.ema_params, state.params)  # steps 1 and 2: a plain copy
    before = state
    state, _ = train_step(before, make_batch(2), rng)  # step 3 = ema_start: the first average
    assert int(state.step) == 3
    expected = jax.tree_util.tree_map(lambda ema, new: 0.9 * ema + 0.1 * new, before.ema_params, state.params)
    chex.assert_trees_all_close(state.ema_params, expected, rtol=1e-6, atol=1e-7)
    assert float(optax.tree.norm(jax.tree_util.tree_map(lambda a, b: a - b, state.ema_params, state.params))) > 0


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_an_anchored_diffusion_does_not_depend_on_where_the_episode_sits(prediction):
    """Anchor "prototypes" diffuses W - p: translating an episode's features and targets by one vector leaves
    the loss and the sampled weights (less the shift) unchanged. Anchor "zero" (the reference) diffuses W
    itself, whose noise depends on the absolute class mean: the same shift changes its loss."""
    from metadiff_jax import sampler as sp

    batch, shift = make_batch(3), 5.0 * np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    moved = batch._replace(support_features=batch.support_features + shift, targets=batch.targets + shift)
    schedule, rng = sl.linear_schedule(100), jax.random.PRNGKey(2)
    losses = {}
    for anchor in ("zero", "prototypes"):
        model = dn.make_denoiser("tcunet", DIM, condition="normalized_gradient", anchor=anchor, prediction=prediction)
        params = dn.init_params(model, jax.random.PRNGKey(0))
        losses[anchor] = [float(df.diffusion_loss(model, schedule, params, b, rng)) for b in (batch, moved)]
        if anchor == "prototypes":
            sample = jax.jit(sp.make_sample_task(model, schedule, sp.SamplerConfig("ddim", 20)), static_argnames="ways")
            weights = [sample(params, b.support_features[0], b.support_labels[0], rng, ways=WAYS) for b in (batch, moved)]
            np.testing.assert_allclose(weights[1] - shift, weights[0], atol=2e-4)
    np.testing.assert_allclose(losses["prototypes"][0], losses["prototypes"][1], rtol=1e-5)
    assert abs(losses["zero"][1] - losses["zero"][0]) > 0.1 * losses["zero"][0]
