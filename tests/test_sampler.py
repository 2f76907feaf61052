import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import base_learner as bl
from metadiff_jax import denoiser as dn
from metadiff_jax import sampler as sp
from metadiff_jax import schedule as sl

SCHEDULE = sl.linear_schedule(200)
WAYS, DIM = 4, 8


class OracleDenoiser(nn.Module):
    """Returns the exact noise of W_t around the support prototypes: an ideal denoiser whose target is p."""

    dim: int
    schedule: sl.NoiseSchedule

    @nn.compact
    def __call__(self, weights_t, t, support_features, support_labels):
        self.param("unused", nn.initializers.zeros, (1,))
        target = bl.prototypes(support_features, support_labels, weights_t.shape[0])
        return (weights_t - self.schedule.sqrt_alphas_cumprod[t] * target) / self.schedule.sqrt_one_minus_alphas_cumprod[t]


def task(seed=0, shots=3):
    labels = jnp.repeat(jnp.arange(WAYS), shots)
    return jax.random.normal(jax.random.PRNGKey(seed), (WAYS * shots, DIM)), labels


@pytest.mark.parametrize(
    "config",
    [
        sp.SamplerConfig("ddpm_mean"),
        sp.SamplerConfig("ddpm"),
        sp.SamplerConfig("ddim", 10),
        sp.SamplerConfig("ddim", 50),
        sp.SamplerConfig("ddim", 200),
        sp.SamplerConfig("ddim", 10, start="prototypes"),
    ],
    ids=lambda c: f"{c.method}-{c.steps}-{c.start}",
)
def test_with_an_oracle_denoiser_every_sampler_lands_on_its_target(config):
    oracle = OracleDenoiser(DIM, SCHEDULE)
    params = oracle.init(jax.random.PRNGKey(0), jnp.zeros((WAYS, DIM)), 0, *task())
    features, labels = task()
    sample = jax.jit(sp.make_sample_task(oracle, SCHEDULE, config), static_argnames="ways")
    weights = sample(params, features, labels, jax.random.PRNGKey(3), ways=WAYS)
    np.testing.assert_allclose(weights, bl.prototypes(features, labels, WAYS), atol=2e-3)


def test_observations_come_one_per_step():
    model = dn.make_denoiser("tcunet", DIM)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    features, labels = task()
    for config, steps in [(sp.SamplerConfig("ddpm_mean"), 200), (sp.SamplerConfig("ddim", 10), 10)]:
        sample = sp.make_sample_task(model, SCHEDULE, config, observe=lambda w: jnp.linalg.norm(w))
        weights, norms = sample(params, features, labels, jax.random.PRNGKey(0), WAYS)
        assert norms.shape == (steps,)
        np.testing.assert_allclose(norms[-1], jnp.linalg.norm(weights), rtol=1e-5)


def test_deterministic_and_stochastic_samplers():
    model = dn.make_denoiser("tcunet", DIM)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    features, labels = task()
    mean_sampler = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddpm_mean", start="prototypes"))
    a = mean_sampler(params, features, labels, jax.random.PRNGKey(0), WAYS)
    b = mean_sampler(params, features, labels, jax.random.PRNGKey(1), WAYS)
    np.testing.assert_allclose(a, b)  # from the prototypes with no noise term: no randomness at all
    stochastic = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddpm", start="prototypes"))
    c = stochastic(params, features, labels, jax.random.PRNGKey(0), WAYS)
    d = stochastic(params, features, labels, jax.random.PRNGKey(1), WAYS)
    assert float(jnp.abs(c - d).max()) > 1e-3


def test_vmapped_episodes_equal_one_task_at_a_time():
    model = dn.make_denoiser("tcunet", DIM)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    sample = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim", 20))
    features = jnp.stack([task(seed)[0] for seed in range(6)])
    labels = jnp.stack([task(seed)[1] for seed in range(6)])
    rng = jax.random.PRNGKey(9)
    batched = jax.jit(lambda p, f, y: sp.sample_episodes(sample, p, f, y, rng, WAYS, jnp.arange(10, 16)))(params, features, labels)
    single = jax.jit(sample, static_argnames="ways")
    for i in range(6):
        alone = single(params, features[i], labels[i], jax.random.fold_in(rng, 10 + i), ways=WAYS)
        np.testing.assert_allclose(batched[i], alone, rtol=1e-4, atol=1e-5)


def test_bad_sampler_settings_are_refused():
    model = dn.make_denoiser("tcunet", DIM)
    with pytest.raises(ValueError, match="Cannot sample with 500 steps: the schedule has T = 200"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim", 500))
    with pytest.raises(ValueError, match="ddpm_mean always runs all T = 200 steps; for 10 steps use method 'ddim'"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddpm_mean", 10))
    with pytest.raises(ValueError, match="Unknown sampler 'euler'"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("euler"))
    with pytest.raises(ValueError, match="Unknown sampler start 'zeros'"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig(start="zeros"))
