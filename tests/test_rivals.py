"""The non-diffusion rivals on frozen features (metadiff_jax/rivals.py) and the one-step regressor."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import base_learner, denoiser, evaluate, regressor, rivals, schedule, synthetic, train
from metadiff_jax.data import episodes
from metadiff_jax.data.split import ClassIndexedSplit

SPEC = episodes.EpisodeSpec(5, 1, 10)


@pytest.fixture(scope="module")
def splits():
    data = synthetic.make_splits(synthetic.SyntheticConfig(dim=32, base_examples=100, novel_examples=30, noise_scale=3.0))
    # Validation classes: the first half of the novel classes; test classes: the other half.
    test = data["test"]
    half = test.class_starts[50]
    data["validation"] = ClassIndexedSplit(test.images[:half], test.class_starts[:51], "synthetic/validation")
    data["test"] = ClassIndexedSplit(test.images[half:], test.class_starts[50:] - half, "synthetic/test")
    return data


def test_finetuning_zero_steps_is_the_prototype_classifier(splits):
    test, _ = evaluate.fixed_episodes(splits["test"], SPEC, 50, seed=0)
    weights = rivals.finetuned_weights(test.support_features, test.support_labels, 5, steps=0, learning_rate=0.5)
    np.testing.assert_allclose(weights, evaluate.prototype_weights(test.support_features, test.support_labels, 5), rtol=1e-6)


def test_ridge_recovers_a_linear_map_and_shrinks_to_the_prototypes():
    rng = np.random.default_rng(0)
    matrix, offset = rng.standard_normal((6, 6)), rng.standard_normal(6)
    prototypes = rng.standard_normal((500, 6))
    fit = rivals.fit_ridge(prototypes, prototypes @ matrix + offset, strength=1e-9)
    np.testing.assert_allclose(fit.matrix, matrix, atol=1e-6)
    np.testing.assert_allclose(fit.offset, offset, atol=1e-6)
    shrunk = rivals.fit_ridge(prototypes, prototypes @ matrix + offset, strength=1e12)
    np.testing.assert_allclose(shrunk.matrix, np.eye(6), atol=1e-3)
    with pytest.raises(ValueError, match="strength must be 0 or more"):
        rivals.fit_ridge(prototypes, prototypes, -1.0)


def test_ridge_learns_the_low_rank_structure_of_the_base_classes(splits):
    # On synthetic features the class means lie near a subspace: a linear map learned on base classes beats
    # the support mean at one shot, chosen on validation and scored on test.
    validation, _ = evaluate.fixed_episodes(splits["validation"], SPEC, 200, seed=1)
    test, _ = evaluate.fixed_episodes(splits["test"], SPEC, 200, seed=0)
    context = rivals.RivalContext(splits["train"], SPEC, 0, validation, test)
    chosen = rivals.select_ridge(rivals.RidgeSettings(draws_per_class=50, strengths=(1.0, 100.0, 1e4)), context)
    prototypes = evaluate.prototype_accuracies(test, 5)
    difference = chosen.test_accuracies - prototypes
    assert difference.mean() - 1.96 * difference.std() / np.sqrt(len(difference)) > 0, chosen


def test_selection_looks_at_validation_only_and_scores_the_choice_on_test():
    seen = []

    def accuracies(candidate, episodes_):
        seen.append((candidate["x"], episodes_))
        return np.full(4, {"validation": candidate["x"], "test": 1 - candidate["x"]}[episodes_])

    chosen = rivals.select([{"x": 0.2}, {"x": 0.7}, {"x": 0.5}], accuracies, "validation", "test")
    assert chosen.choice == {"x": 0.7} and chosen.validation_accuracy == pytest.approx(0.7)
    np.testing.assert_allclose(chosen.test_accuracies, 0.3)
    assert [e for _, e in seen].count("test") == 1  # the test episodes are scored once, for the choice


def test_anil_on_features_learns_above_chance(splits):
    validation, _ = evaluate.fixed_episodes(splits["validation"], SPEC, 100, seed=1)
    test, _ = evaluate.fixed_episodes(splits["test"], SPEC, 100, seed=0)
    context = rivals.RivalContext(splits["train"], SPEC, 0, validation, test)
    settings = rivals.AnilSettings(inner_lrs=(0.5,), outer_lrs=(1e-2,), inner_steps=5, steps=200, meta_batch=8, normalize=False, validate_every=50)
    chosen = rivals.select_anil(settings, context)
    assert chosen.test_accuracies.mean() > 0.4 and chosen.choice["inner_steps"] == 5
    assert chosen.choice["outer_steps"] in (50, 100, 150, 200) and chosen.choice["normalize"] is False


def test_anil_with_patience_keeps_the_state_best_on_validation(splits):
    """Training is deterministic: the state returned is the one of the check with the best score (the first of
    equals), the same as training just that many steps; without validation it is the last."""
    validation, _ = evaluate.fixed_episodes(splits["validation"], SPEC, 30, seed=1)
    learner = rivals.anil_learner(5, 3, 0.5, 3e-2)
    train = lambda steps, **kw: rivals.train_anil(learner, splits["train"], SPEC, steps, 4, 0, **kw)
    scores = []
    for steps in (20, 40, 60):
        state, step = train(steps)
        assert step == steps
        scores.append(float(rivals.anil_accuracies(learner, state, validation).mean()))
    state, step = train(60, validation=validation, validate_every=20, patience=5)
    assert step == 20 * (1 + int(np.argmax(scores)))
    assert float(rivals.anil_accuracies(learner, state, validation).mean()) == scores[int(np.argmax(scores))]


def _primal_logistic_accuracies(support, labels, query, query_labels, ways, strength, steps, momentum):
    """Heavy-ball gradient descent on (W, b) in the d-dimensional primal, float64: what the Gram-matrix fit
    must reproduce. Also returns the smallest top-two logit gap over every query read."""
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    support, query = unit(support.astype(np.float64)), unit(query.astype(np.float64))
    targets = np.eye(ways)[labels]
    rate = 1.0 / (1.0 + 2.0 * strength)
    weights, bias = np.zeros((len(support), ways, support.shape[-1])), np.zeros((len(support), ways))
    velocity_weights, velocity_bias = np.zeros_like(weights), np.zeros_like(bias)
    accuracies, gap = {}, np.inf
    for step in range(1, max(steps) + 1):
        logits = np.einsum("end,ewd->enw", support, weights) + bias[:, None]
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        residual = probabilities / probabilities.sum(-1, keepdims=True) - targets
        velocity_weights = momentum * velocity_weights + np.einsum("enw,end->ewd", residual, support) / support.shape[1] + 2 * strength * weights
        velocity_bias = momentum * velocity_bias + residual.mean(axis=1)
        weights, bias = weights - rate * velocity_weights, bias - rate * velocity_bias
        if step in steps:
            query_logits = np.einsum("eqd,ewd->eqw", query, weights) + bias[:, None]
            top_two = np.sort(query_logits, -1)[..., -2:]
            gap = min(gap, float((top_two[..., 1] - top_two[..., 0]).min()))
            accuracies[step] = np.mean(query_logits.argmax(-1) == query_labels, axis=-1)
    return np.stack([accuracies[s] for s in steps]), gap


def test_logistic_regression_on_the_gram_matrix_is_gradient_descent_in_the_primal():
    rng = np.random.default_rng(4)  # a draw whose queries are all clear of a tie at every step read (asserted below)
    episodes_, ways, shots, queries, dim = 6, 5, 3, 8, 40
    support_labels = np.tile(np.repeat(np.arange(ways), shots), (episodes_, 1))
    query_labels = np.tile(np.repeat(np.arange(ways), queries), (episodes_, 1))
    centres = rng.standard_normal((episodes_, ways, dim))
    support = np.abs(np.take_along_axis(centres, support_labels[..., None], 1) + 1.5 * rng.standard_normal((episodes_, ways * shots, dim)))
    query = np.abs(np.take_along_axis(centres, query_labels[..., None], 1) + 1.5 * rng.standard_normal((episodes_, ways * queries, dim)))
    steps = (2, 7, 60)
    for strength in (0.0, 0.05):
        expected, gap = _primal_logistic_accuracies(support, support_labels, query, query_labels, ways, strength, steps, 0.9)
        assert gap > 1e-4  # no query within float32 rounding of a tie: the accuracies must agree exactly
        got = rivals.logistic_regression_accuracies(support, support_labels, query, query_labels, ways, strength, steps)
        np.testing.assert_allclose(got, expected, atol=1e-6)  # float32 means; one query differing moves one by 1 / 40
        assert 0.3 < expected[-1].mean() < 1.0  # a problem with something to learn, not solved at step 1
        # The features are L2-normalised first: scaling an episode's features changes nothing.
        scaled = rivals.logistic_regression_accuracies(7.0 * support, support_labels, 7.0 * query, query_labels, ways, strength, steps)
        np.testing.assert_array_equal(scaled, got)


def test_power_transform_and_the_rows_that_search_it(splits):
    features = np.array([[0.0, 0.25, 4.0, -9.0]], np.float32)
    np.testing.assert_allclose(rivals.power_transform(features, 0.5), [[0.0, 0.5, 2.0, -3.0]])
    assert rivals.power_transform(features, 1.0) is not None and np.array_equal(rivals.power_transform(features, 1.0), features)
    validation, _ = evaluate.fixed_episodes(splits["validation"], SPEC, 50, seed=1)
    test, _ = evaluate.fixed_episodes(splits["test"], SPEC, 50, seed=0)
    context = rivals.RivalContext(splits["train"], SPEC, 0, validation, test)
    plain = rivals.select_power_prototypes(rivals.PowerPrototypeSettings(exponents=(1.0,)), context)
    np.testing.assert_array_equal(plain.test_accuracies, evaluate.prototype_accuracies(test, 5))
    chosen = rivals.select_logistic(rivals.LogisticSettings(strengths=(1e-3, 1e-1), steps=(10, 100), power_exponents=(1.0,)), context)
    assert set(chosen.choice) == {"power_exponent", "strength", "steps"} and chosen.test_accuracies.shape == (50,)
    assert chosen.test_accuracies.mean() > 0.5  # synthetic classes are well apart: far above the 0.2 of chance
    with pytest.raises(ValueError, match="exponents must be one or more positive exponents"):
        rivals.PowerPrototypeSettings(exponents=(0.0,))
    with pytest.raises(ValueError, match="steps must be one or more step counts"):
        rivals.LogisticSettings(steps=())


class FixedOutput(nn.Module):
    """A denoiser whose output is a parameter M when read at x_t = 0 and t = T - 1 (and something else anywhere
    else), with the fields the regressor reads: where it is anchored and what it predicts."""

    anchor: str
    prediction: str
    last_t: int

    @nn.compact
    def __call__(self, x_t, t, support_features, support_labels):
        output = self.param("output", nn.initializers.normal(1.0), x_t.shape)
        return output + 7.0 * x_t + 3.0 * (t - self.last_t)


@pytest.mark.parametrize("anchor", ["zero", "prototypes"])
@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_the_one_step_regressor_reads_the_denoiser_once_at_the_mean_of_the_noise(anchor, prediction):
    """W = origin - M for a noise predictor (its output read as the noise at x_T = 0), origin + M for an
    x0-predictor, origin = 0 or the support prototypes; and its loss is the mean squared error against W0."""
    noise = schedule.linear_schedule(50)
    model = FixedOutput(anchor, prediction, noise.num_timesteps - 1)
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((6, 4)).astype(np.float32), np.array([0, 0, 1, 1, 2, 2])
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((3, 4)), 0, features, labels)
    output = np.asarray(params["params"]["output"], np.float64)
    origin = np.stack([features[labels == k].mean(axis=0) for k in range(3)]) if anchor == "prototypes" else np.zeros((3, 4))
    expected = origin + (output if prediction == "x0" else -output)
    weights = regressor.make_predict_task(model, noise)(params, features, labels, jax.random.PRNGKey(1), 3)
    np.testing.assert_allclose(weights, expected, rtol=1e-6, atol=1e-6)
    targets = rng.standard_normal((1, 3, 4)).astype(np.float32)
    batch = train.diffusion.TrainBatch(features[None], labels[None], targets)
    loss, _ = regressor.make_loss(model, noise)(params, batch, None, 0)
    assert float(loss) == pytest.approx(np.mean((expected - targets[0]) ** 2), rel=1e-5)


def test_the_regressor_rival_trains_towards_the_class_means_and_is_scored_in_one_pass(splits):
    """Through the registry, as the main job runs it: MetaDiff's denoiser trained with the regression
    objective lowers its loss, and the row's test accuracies are its one-pass weights' accuracies."""
    model = denoiser.make_denoiser("tcunet", 32, condition="normalized_gradient")
    noise = schedule.linear_schedule(100)
    config = train.TrainConfig(steps=300, learning_rate=1e-3, check_every=50)
    trained = {}

    def train_denoiser(name, overrides):
        training = train.dataclasses.replace(config, **overrides)
        state, losses = train.train_denoiser(model, noise, denoiser.init_params(model, jax.random.PRNGKey(0)), splits["train"], SPEC, training, progress=False)
        trained.update(losses=losses, params=state.ema_params, objective=training.objective)
        sample_task = train.weights_reader(model, noise, training, None)
        evaluator = evaluate.make_evaluator(sample_task, 5, 32)
        return train.TrainedDenoiser(model, noise, state.ema_params, losses, sample_task, training.steps, evaluator, training.steps)

    validation, _ = evaluate.fixed_episodes(splits["validation"], SPEC, 20, seed=1)
    test, _ = evaluate.fixed_episodes(splits["test"], SPEC, 20, seed=0)
    chosen = rivals.select_regressor(rivals.RegressorSettings(), rivals.RivalContext(splits["train"], SPEC, 0, validation, test, train_denoiser))
    assert trained["objective"] == "regression" and chosen.choice == {"steps": 300}
    assert trained["losses"][-50:].mean() < 0.7 * trained["losses"][:50].mean()
    weights = jax.vmap(lambda f, y: regressor.regression_weights(model, noise, trained["params"], f, y, 5))(test.support_features, test.support_labels)
    logits = jax.vmap(lambda w, q: base_learner.cosine_logits(w, q))(weights, jnp.asarray(test.query_features))
    np.testing.assert_allclose(chosen.test_accuracies, np.mean(np.argmax(logits, -1) == test.query_labels, axis=-1))
    with pytest.raises(ValueError, match="objective 'denoise' is unknown"):
        train.TrainConfig(objective="denoise")


def test_the_regressor_rival_trains_one_regressor_per_learning_rate_and_chooses_on_validation():
    """Each rate of the grid trains its own regressor (its own checkpoint name); the rate best on validation is
    tested, and the choice records the step it tested."""
    calls = []

    def train_denoiser(name, overrides):
        calls.append((name, overrides["learning_rate"], overrides["patience"]))
        rate = overrides["learning_rate"]
        # Validation prefers 3e-4, test would prefer 1e-3: the test episodes must not decide.
        scores = {"validation": {1e-4: 0.5, 3e-4: 0.7, 1e-3: 0.6}, "test": {1e-4: 0.1, 3e-4: 0.2, 1e-3: 0.9}}
        evaluator = lambda params, episodes_, rng: (np.full(4, scores[episodes_][rate]),)
        return train.TrainedDenoiser(None, None, None, np.zeros(0), None, 500, evaluator, {1e-4: 100, 3e-4: 200, 1e-3: 300}[rate])

    context = rivals.RivalContext(None, SPEC, 0, "validation", "test", train_denoiser)
    chosen = rivals.select_regressor(rivals.RegressorSettings(learning_rates=(1e-4, 3e-4, 1e-3), patience=2), context)
    assert [c[0] for c in calls] == ["regressor_lr0.0001", "regressor_lr0.0003", "regressor_lr0.001"] and {c[2] for c in calls} == {2}
    assert chosen.choice == {"steps": 200, "learning_rate": 3e-4} and chosen.validation_accuracy == pytest.approx(0.7)
    np.testing.assert_allclose(chosen.test_accuracies, 0.2)
