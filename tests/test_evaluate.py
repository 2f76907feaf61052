import jax
import numpy as np
import pytest

from metadiff_jax import denoiser as dn
from metadiff_jax import evaluate as ev
from metadiff_jax import sampler as sp
from metadiff_jax import schedule as sl
from metadiff_jax import synthetic, train
from metadiff_jax.data import episodes as episodes_lib

SPEC = episodes_lib.EpisodeSpec(5, 1, 15)


@pytest.fixture(scope="module")
def synthetic_splits():
    return synthetic.make_splits(synthetic.SyntheticConfig(noise_scale=3.0))


def test_ci95_is_1_96_std_over_root_n():
    values = np.array([0.2, 0.4, 0.6, 0.8])
    mean, ci = ev.mean_ci95(values)
    assert mean == pytest.approx(0.5) and ci == pytest.approx(1.96 * np.std(values) / 2)
    result = ev.summarize("m", [0.5, 0.7, 0.9], 5, 1, reference=[0.4, 0.7, 0.8])
    assert result.paired_diff == pytest.approx(0.2 / 3)
    assert result.paired_ci95 == pytest.approx(1.96 * np.std([0.1, 0.0, 0.1]) / np.sqrt(3))


@pytest.mark.parametrize("count", [600, 1000])
def test_fixed_test_episodes_are_seeded(synthetic_splits, count):
    first, digest = ev.fixed_episodes(synthetic_splits["test"], SPEC, count, seed=1)
    again, digest_again = ev.fixed_episodes(synthetic_splits["test"], SPEC, count, seed=1)
    other, other_digest = ev.fixed_episodes(synthetic_splits["test"], SPEC, count, seed=2)
    assert first.support_features.shape == (count, 5, 64) and first.query_features.shape == (count, 75, 64)
    np.testing.assert_array_equal(first.query_features, again.query_features)
    assert digest == digest_again != other_digest


def test_untrained_denoiser_lands_near_the_prototype_classifier(synthetic_splits):
    # The reference's EMA bug evaluates the untrained denoiser; eps_hat contains g, so it converges to the
    # prototypes: the paired difference is close to zero.
    episodes, _ = ev.fixed_episodes(synthetic_splits["test"], SPEC, 300, seed=0)
    model = dn.make_denoiser("tcunet", 64)
    evaluate = ev.make_evaluator(sp.make_sample_task(model, sl.linear_schedule(1000)), ways=5, dim=64)
    accuracies, per_step = evaluate(dn.init_params(model, jax.random.PRNGKey(0)), episodes, jax.random.PRNGKey(1))
    prototypes = ev.prototype_accuracies(episodes, 5)
    assert accuracies.shape == (300,) and per_step.shape == (1000,)
    assert abs(accuracies.mean() - prototypes.mean()) < 0.01
    assert per_step[0] < 0.3 and per_step[-1] == pytest.approx(accuracies.mean())  # from noise to the answer


def test_trained_metadiff_beats_prototypes_at_one_shot(synthetic_splits):
    model = dn.make_denoiser("tcunet", 64)
    schedule = sl.linear_schedule(1000)
    config = train.TrainConfig(steps=5000, learning_rate=3e-4, ema_decay=0.999, ema_start=200)
    state, losses = train.train_denoiser(model, schedule, dn.init_params(model, jax.random.PRNGKey(0)), synthetic_splits["train"], SPEC, config, progress=False)
    assert losses[-500:].mean() < 0.7 * losses[:50].mean()
    episodes, _ = ev.fixed_episodes(synthetic_splits["test"], SPEC, 600, seed=0)
    accuracies, _ = ev.make_evaluator(sp.make_sample_task(model, schedule), ways=5, dim=64)(state.ema_params, episodes, jax.random.PRNGKey(1))
    prototypes = ev.prototype_accuracies(episodes, 5)
    result = ev.summarize("metadiff", accuracies, 5, 1, reference=prototypes)
    assert result.paired_diff - result.paired_ci95 > 0, result


def test_bad_episodes_get_clear_errors(synthetic_splits):
    episodes, _ = ev.fixed_episodes(synthetic_splits["test"], SPEC, 4, seed=0)
    with pytest.raises(ev.InputError, match="support features have dim 64 but the denoiser was built for dim 512"):
        ev.check_episodes(episodes, 5, 512)
    with pytest.raises(ev.InputError, match="support labels run from 0 to 4 but ways = 3"):
        ev.check_episodes(episodes, 3, 64)
    nan = episodes.query_features.copy()
    nan[2, 7, 1] = np.inf
    with pytest.raises(ev.InputError, match=r"query features hold NaN or Inf \(first at index \(2, 7, 1\)\)"):
        ev.check_episodes(episodes._replace(query_features=nan), 5, 64)
    missing = episodes.support_labels.copy()
    missing[1, 4] = 0
    with pytest.raises(ev.InputError, match="episode 1 has a class with no support example"):
        ev.check_episodes(episodes._replace(support_labels=missing), 5, 64)
    with pytest.raises(ev.InputError, match=r"support labels have shape \(4, 4\), expected \(4, 5\)"):
        ev.check_episodes(episodes._replace(support_labels=episodes.support_labels[:, :4]), 5, 64)


def test_training_refuses_features_that_do_not_fit(synthetic_splits):
    model = dn.make_denoiser("tcunet", 32)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    config = train.TrainConfig(steps=1)
    with pytest.raises(ValueError, match=r"train features have dim 64 but the denoiser was built for dim 32"):
        train.train_denoiser(model, sl.linear_schedule(100), params, synthetic_splits["train"], SPEC, config, progress=False)
    broken = synthetic_splits["train"]
    images = broken.images.copy()
    images[1234, 5] = np.nan
    model = dn.make_denoiser("tcunet", 64)
    with pytest.raises(ValueError, match=r"features hold NaN or Inf \(first at index \(1234, 5\)\)"):
        train.train_denoiser(
            model,
            sl.linear_schedule(100),
            dn.init_params(model, jax.random.PRNGKey(0)),
            broken.__class__(images, broken.class_starts, "x"),
            SPEC,
            config,
            progress=False,
        )


def test_a_diverging_run_stops_with_its_step(synthetic_splits):
    model = dn.make_denoiser("tcunet", 64)
    config = train.TrainConfig(steps=20, learning_rate=1e30, check_every=5)
    with pytest.raises(Exception, match="diverged at step"):
        train.train_denoiser(
            model, sl.linear_schedule(100), dn.init_params(model, jax.random.PRNGKey(0)), synthetic_splits["train"], SPEC, config, progress=False
        )
