"""The non-diffusion rivals on frozen features (metadiff_jax.baselines.features) and the one-step regressor."""

import jax
import numpy as np
import pytest

from metadiff_jax import denoiser, diffusion, evaluate, sampler, schedule, synthetic, train
from metadiff_jax.baselines import features as rivals
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
    chosen = rivals.select_ridge(splits["train"], 1, 50, (1.0, 100.0, 1e4), 0, validation, test, 5)
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
    chosen = rivals.select_anil(splits["train"], SPEC, (0.5,), 5, 1e-2, 200, 8, 0, validation, test)
    assert chosen.test_accuracies.mean() > 0.4 and chosen.choice["inner_steps"] == 5


def test_one_step_regressor_trains_towards_the_class_means_and_samples_in_one_pass(splits):
    model = denoiser.make_denoiser("tcunet", 32, condition="normalized_gradient")
    noise = schedule.linear_schedule(100)
    params = denoiser.init_params(model, jax.random.PRNGKey(0))
    config = train.TrainConfig(steps=300, learning_rate=1e-3, objective="regression", check_every=50)
    state, losses = train.train_denoiser(model, noise, params, splits["train"], SPEC, config, progress=False)
    assert losses[-50:].mean() < 0.7 * losses[:50].mean()
    test, _ = evaluate.fixed_episodes(splits["test"], SPEC, 20, seed=0)
    task = sampler.make_sample_task(model, noise, sampler.SamplerConfig("one_step"))
    sampled = sampler.sample_episodes(task, state.ema_params, test.support_features, test.support_labels, jax.random.PRNGKey(0), 5)
    direct = jax.vmap(lambda f, y: diffusion.regression_weights(model, noise, state.ema_params, f, y, 5))(test.support_features, test.support_labels)
    np.testing.assert_allclose(sampled, direct, rtol=1e-6)
    with pytest.raises(ValueError, match="objective 'denoise' is unknown"):
        train.TrainConfig(objective="denoise")
