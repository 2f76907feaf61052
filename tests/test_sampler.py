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
        sp.SamplerConfig("ddpm_mean", 20),
        sp.SamplerConfig("linear", 10),
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
        sample = sp.make_sample_task(model, SCHEDULE, config)
        weights, norms = sample(params, features, labels, jax.random.PRNGKey(0), WAYS, observe=lambda w: jnp.linalg.norm(w))
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


def test_the_respaced_ddpm_keeps_the_forward_marginals_of_the_timesteps_it_visits():
    """DDPM over K < T timesteps tau is the respaced process: its alphas multiply, from the last step back to
    step i, to abar at tau_i, and each step's noise coefficient is its beta over sqrt(1 - abar_tau_i); over
    all T timesteps it is the schedule's own chain."""
    timesteps = sl.ddim_timesteps(SCHEDULE.num_timesteps, 7)
    coefficients = sl.ddpm_coefficients(SCHEDULE, timesteps)
    abar = np.asarray(SCHEDULE.alphas_cumprod, np.float64)[timesteps]
    alphas = 1.0 / np.asarray(coefficients.sqrt_recip_alpha, np.float64) ** 2
    np.testing.assert_allclose(np.cumprod(alphas[::-1])[::-1], abar, rtol=1e-5)
    np.testing.assert_allclose(coefficients.eps_coef, (1.0 - alphas) / np.sqrt(1.0 - abar), rtol=1e-4)
    np.testing.assert_allclose(coefficients.noise_scale[:-1], np.sqrt(1.0 - alphas[:-1]), rtol=1e-4)
    assert coefficients.noise_scale[-1] == 0.0
    whole = sl.ddpm_coefficients(SCHEDULE, np.arange(SCHEDULE.num_timesteps)[::-1])
    np.testing.assert_array_equal(whole.eps_coef, SCHEDULE.eps_coef[::-1])
    np.testing.assert_array_equal(whole.sqrt_recip_alpha, SCHEDULE.sqrt_recip_alphas[::-1])


def test_the_linear_rule_starts_as_ddim_and_its_coefficients_are_parameters():
    """The linear rule's planned coefficients are DDIM's steps rewritten (the same samples); other
    coefficients passed in change the samples, and the samples are differentiable with respect to them."""
    model = dn.make_denoiser("tcunet", DIM, time_dim=16)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    features, labels = task()
    ddim = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim", 6))(params, features, labels, jax.random.PRNGKey(2), WAYS)
    linear = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("linear", 6))
    np.testing.assert_allclose(linear(params, features, labels, jax.random.PRNGKey(2), WAYS), ddim, rtol=1e-4, atol=1e-5)
    initial = sp.initial_coefficients(SCHEDULE, sp.SamplerConfig("linear", 6))
    moved = initial._replace(eps_scale=initial.eps_scale * 1.1)
    assert float(jnp.abs(linear(params, features, labels, jax.random.PRNGKey(2), WAYS, coefficients=moved) - ddim).max()) > 1e-3
    gradient = jax.grad(lambda c: jnp.sum(linear(params, features, labels, jax.random.PRNGKey(2), WAYS, coefficients=c) ** 2))(initial)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(gradient))


def test_a_registered_sampler_runs_in_the_one_loop_for_evaluation_and_for_gradients(monkeypatch):
    """Adding a sampler is one update function and one registry entry: here DDIM with eta = 1 (its noise
    term fresh at each step), which the loop then runs, observes, vmaps and differentiates like the others."""

    def ddim_eta_one(schedule, t, coefficients, x_t, eps_hat, noise):
        c = coefficients
        x0 = (x_t - c.sqrt_one_minus_abar * eps_hat) / c.sqrt_abar
        abar, abar_next = c.sqrt_abar**2, c.sqrt_abar_next**2
        sigma = jnp.sqrt((1 - abar_next) / (1 - abar) * (1 - abar / abar_next))
        return c.sqrt_abar_next * x0 + jnp.sqrt(jnp.maximum(1 - abar_next - sigma**2, 0.0)) * eps_hat + sigma * noise

    monkeypatch.setitem(sp.SAMPLERS, "ddim_eta_one", sp.StepRule(sp.ddim_plan, ddim_eta_one, stochastic=True))
    oracle = OracleDenoiser(DIM, SCHEDULE)
    features, labels = task()
    params = oracle.init(jax.random.PRNGKey(0), jnp.zeros((WAYS, DIM)), 0, features, labels)
    sample = jax.jit(sp.make_sample_task(oracle, SCHEDULE, sp.SamplerConfig("ddim_eta_one", 20)), static_argnames="ways")
    np.testing.assert_allclose(sample(params, features, labels, jax.random.PRNGKey(3), ways=WAYS), bl.prototypes(features, labels, WAYS), atol=2e-3)
    model = dn.make_denoiser("tcunet", DIM, time_dim=16)
    model_params = dn.init_params(model, jax.random.PRNGKey(0))
    differentiable = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim_eta_one", 5), remat=True)
    gradient = jax.grad(lambda p: jnp.sum(differentiable(p, features, labels, jax.random.PRNGKey(1), WAYS) ** 2))(model_params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(gradient)]
    assert all(np.isfinite(norms)) and max(norms) > 0


def test_truncated_backpropagation_runs_the_same_forward_pass_and_observes_every_step():
    model = dn.make_denoiser("tcunet", DIM, time_dim=16)
    params = dn.init_params(model, jax.random.PRNGKey(0))
    features, labels = task()
    observe = lambda w: jnp.linalg.norm(w)
    whole = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim", 8))(params, features, labels, jax.random.PRNGKey(0), WAYS, observe)
    truncated = sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim", 8), remat=True, backprop_steps=3)
    weights, norms = truncated(params, features, labels, jax.random.PRNGKey(0), WAYS, observe)
    np.testing.assert_allclose(weights, whole[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(norms, whole[1], rtol=1e-6)
    assert norms.shape == (8,)
    with pytest.raises(ValueError, match="backprop_steps k = 9 must be in 1 .. 8"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("ddim", 8), backprop_steps=9)


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
    with pytest.raises(ValueError, match="Unknown sampler 'euler'"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig("euler"))
    with pytest.raises(ValueError, match="Unknown sampler start 'zeros'"):
        sp.make_sample_task(model, SCHEDULE, sp.SamplerConfig(start="zeros"))


GAUSS_SCHEDULE = sl.linear_schedule(1000)
GAUSS_MEAN = jnp.array([1.0, -0.5, 0.25])
GAUSS_FACTOR = jnp.array([[0.8, 0.0, 0.0], [0.3, 0.5, 0.0], [-0.2, 0.1, 0.3]])
GAUSS_COV = GAUSS_FACTOR @ GAUSS_FACTOR.T


class GaussianNoisePredictor(nn.Module):
    """The exact noise predictor of a Gaussian target DISTRIBUTION N(m, S) (support ignored):
    E[eps | x_t] = sqrt(1 - abar_t) C_t^-1 (x_t - sqrt(abar_t) m), C_t = abar_t S + (1 - abar_t) I."""

    @nn.compact
    def __call__(self, x_t, t, support_features, support_labels):
        abar = GAUSS_SCHEDULE.alphas_cumprod[t]
        covariance = abar * GAUSS_COV + (1.0 - abar) * jnp.eye(3)
        return jnp.sqrt(1.0 - abar) * jnp.linalg.solve(covariance, (x_t - jnp.sqrt(abar) * GAUSS_MEAN).T).T


def gaussian_draws(config: sp.SamplerConfig, count: int = 10_000) -> np.ndarray:
    task = sp.make_sample_task(GaussianNoisePredictor(), GAUSS_SCHEDULE, config)
    features, labels = jnp.zeros((count, 1, 3)), jnp.zeros((count, 1), jnp.int32)
    draws = jax.jit(lambda f, y: sp.sample_episodes(task, {}, f, y, jax.random.PRNGKey(0), 1))(features, labels)
    return np.asarray(draws[:, 0], np.float64)


SAMPLERS_OF_THE_DISTRIBUTION = [sp.SamplerConfig("ddpm"), sp.SamplerConfig("ddim", 100), sp.SamplerConfig("ddim", 250), sp.SamplerConfig("ddim", 1000)]


@pytest.mark.parametrize("config", SAMPLERS_OF_THE_DISTRIBUTION, ids=lambda c: f"{c.method}-{c.steps}")
def test_samplers_draw_from_a_gaussian_target_distribution(config):
    draws = gaussian_draws(config)
    np.testing.assert_allclose(draws.mean(axis=0), GAUSS_MEAN, atol=0.03)  # 10,000 draws: standard error <= 0.008
    np.testing.assert_allclose(np.cov(draws.T), GAUSS_COV, atol=0.04)


def test_few_step_ddim_has_the_right_mean_and_too_little_spread():
    """DDIM at 50 steps of the linear schedule: the mean right, the covariance ~ 90 % of the target's (its
    first steps are long; a discretisation error, not a bias of the mean)."""
    draws = gaussian_draws(sp.SamplerConfig("ddim", 50))
    np.testing.assert_allclose(draws.mean(axis=0), GAUSS_MEAN, atol=0.03)
    spread = np.trace(np.cov(draws.T)) / float(jnp.trace(GAUSS_COV))
    assert 0.85 < spread < 0.95


def test_the_deterministic_ddpm_mean_is_a_mean_estimator_not_a_sampler():
    """The reference's sampler (every DDPM mean step, no noise term) lands every start on the target's mean:
    the covariance it gives is ~0 (below 1e-3 of the target's), not the target's. A classifier wants the
    mean; a sampler (ddpm, ddim) gives draws around it."""
    draws = gaussian_draws(sp.SamplerConfig("ddpm_mean"), count=2_000)
    np.testing.assert_allclose(draws.mean(axis=0), GAUSS_MEAN, atol=0.01)
    assert np.trace(np.cov(draws.T)) < 1e-3 * float(jnp.trace(GAUSS_COV))


@pytest.mark.parametrize("config", [sp.SamplerConfig("ddim", 50, start="zero"), sp.SamplerConfig("ddim", 50, draws=256)], ids=["zero-start", "256-draws"])
def test_ddim_estimates_of_the_mean_land_on_it(config):
    """The estimators that make a sampler a mean estimator: DDIM from the noise's mean (exact for a Gaussian
    target, up to abar_T), and the mean of many draws."""
    estimates = gaussian_draws(config, count=64)
    np.testing.assert_allclose(estimates.mean(axis=0), GAUSS_MEAN, atol=0.02)
    assert np.trace(np.cov(estimates.T)) < 0.02 * float(jnp.trace(GAUSS_COV))
