import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import schedule as sl


def test_linear_schedule_is_the_reference_one():
    schedule = sl.linear_schedule(1000)
    assert schedule.num_timesteps == 1000
    np.testing.assert_allclose([schedule.betas[0], schedule.betas[-1]], [1e-4, 0.02], rtol=1e-6)
    short = sl.linear_schedule(100)  # the reference scales betas by 1000 / T
    np.testing.assert_allclose([short.betas[0], short.betas[-1]], [1e-3, 0.2], rtol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_arrays_are_consistent(name):
    s = sl.make_schedule(name, 1000)
    abar = np.asarray(s.alphas_cumprod, np.float64)
    assert np.all(np.diff(abar) < 0) and abar[-1] < 1e-3 and abar[0] > 0.99
    np.testing.assert_allclose(abar, np.cumprod(1 - np.asarray(s.betas, np.float64)), rtol=1e-4)
    np.testing.assert_allclose(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])
    np.testing.assert_allclose(s.sqrt_alphas_cumprod**2 + s.sqrt_one_minus_alphas_cumprod**2, 1.0, rtol=1e-5)
    assert np.all(np.asarray(s.betas) <= 0.999)


def test_q_sample_has_the_forward_marginal():
    s = sl.linear_schedule(1000)
    x0 = jnp.full((200_000,), 2.0)
    noise = jax.random.normal(jax.random.PRNGKey(0), x0.shape)
    x_t = sl.q_sample(s, x0, 300, noise)
    np.testing.assert_allclose(x_t.mean(), 2.0 * np.sqrt(s.alphas_cumprod[300]), atol=0.01)
    np.testing.assert_allclose(x_t.var(), 1.0 - s.alphas_cumprod[300], rtol=0.02)


def test_posterior_mean_matches_bayes_and_the_reference_update():
    s = sl.linear_schedule(1000)
    x0, x_t, t = jnp.array([0.3, -1.2]), jnp.array([0.9, 0.4]), 417
    # Bayes for Gaussians, in float64: q(x_{t-1}|x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}),
    # q(x_t|x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t).
    abar_prev, alpha, beta = (float(np.float64(a)) for a in (s.alphas_cumprod_prev[t], s.alphas[t], s.betas[t]))
    precision = 1 / (1 - abar_prev) + alpha / beta
    mean = (np.sqrt(abar_prev) * np.asarray(x0) / (1 - abar_prev) + np.sqrt(alpha) * np.asarray(x_t) / beta) / precision
    np.testing.assert_allclose(sl.posterior_mean(s, x0, x_t, t), mean, rtol=1e-4)
    np.testing.assert_allclose(s.posterior_variance[t], 1 / precision, rtol=1e-4)
    eps = (x_t - s.sqrt_alphas_cumprod[t] * x0) / s.sqrt_one_minus_alphas_cumprod[t]
    np.testing.assert_allclose(sl.ddpm_mean(s, x_t, t, eps), mean, rtol=1e-4)
    np.testing.assert_allclose(sl.predict_x0(s, x_t, t, eps), x0, rtol=1e-4)


@pytest.mark.parametrize("steps", [1, 10, 50, 100, 1000])
def test_ddim_with_the_true_noise_lands_on_x0_for_any_subsequence(steps):
    s = sl.linear_schedule(1000)
    coefficients = sl.ddim_coefficients(s, sl.ddim_timesteps(1000, steps))
    assert len(coefficients.timesteps) == steps and coefficients.timesteps[0] == 999
    assert steps == 1 or coefficients.timesteps[-1] == 0
    x0 = jnp.array([0.5, -2.0, 1.0])
    x = sl.q_sample(s, x0, 999, jnp.array([1.0, 0.3, -0.7]))
    for t, a, b, a_next, b_next in zip(*coefficients):
        eps = (x - s.sqrt_alphas_cumprod[t] * x0) / s.sqrt_one_minus_alphas_cumprod[t]
        x = a_next * (x - b * eps) / a + b_next * eps
    np.testing.assert_allclose(x, x0, atol=1e-3)


def test_bad_timesteps_and_step_counts_are_refused():
    s = sl.linear_schedule(100)
    with pytest.raises(ValueError, match="Cannot sample with 101 steps.*T = 100"):
        sl.ddim_timesteps(100, 101)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sl.ddim_coefficients(s, [10, 20])
    with pytest.raises(ValueError, match="with T = 10 its last beta would be 2 >= 1. Use T > 20"):
        sl.linear_schedule(10)
    with pytest.raises(ValueError, match="Unknown noise schedule 'sigmoid'"):
        sl.make_schedule("sigmoid", 100)
