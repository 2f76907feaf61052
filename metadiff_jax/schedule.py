"""Noise schedules as a pytree of precomputed arrays, and the Gaussian diffusion algebra over them.

Forward process: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with alpha_t = 1 - beta_t and
abar_t = prod_{s <= t} alpha_s, for t = 0 .. T-1 (index t is the reference's t; abar_{-1} = 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class NoiseSchedule(NamedTuple):
    """Every array is float32 `(T,)`, indexed by the timestep t in 0 .. T-1."""

    betas: jnp.ndarray
    alphas: jnp.ndarray
    alphas_cumprod: jnp.ndarray  # abar_t
    alphas_cumprod_prev: jnp.ndarray  # abar_{t-1}, with abar_{-1} = 1
    sqrt_alphas_cumprod: jnp.ndarray
    sqrt_one_minus_alphas_cumprod: jnp.ndarray
    sqrt_recip_alphas: jnp.ndarray  # 1 / sqrt(alpha_t)
    eps_coef: jnp.ndarray  # beta_t / sqrt(1 - abar_t): the reference's remove_noise_coeff
    posterior_variance: jnp.ndarray  # beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
    posterior_mean_coef_x0: jnp.ndarray  # beta_t sqrt(abar_{t-1}) / (1 - abar_t)
    posterior_mean_coef_xt: jnp.ndarray  # (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]


def from_betas(betas) -> NoiseSchedule:
    """All schedule arrays from betas, computed in float64 and stored as float32."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or np.any(betas <= 0) or np.any(betas >= 1):
        raise ValueError("betas must be a 1-D array with every value in (0, 1).")
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    arrays = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=abar,
        alphas_cumprod_prev=abar_prev,
        sqrt_alphas_cumprod=np.sqrt(abar),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - abar),
        sqrt_recip_alphas=1.0 / np.sqrt(alphas),
        eps_coef=betas / np.sqrt(1.0 - abar),
        posterior_variance=betas * (1.0 - abar_prev) / (1.0 - abar),
        posterior_mean_coef_x0=betas * np.sqrt(abar_prev) / (1.0 - abar),
        posterior_mean_coef_xt=(1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
    )
    return NoiseSchedule(**{name: jnp.asarray(value, jnp.float32) for name, value in arrays.items()})


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """Linear betas from beta_start to beta_end at T = 1000, scaled by 1000 / T as the reference does."""
    scale = 1000.0 / num_timesteps
    if beta_end * scale >= 1.0:
        raise ValueError(
            f"The linear schedule scales betas by 1000 / T; with T = {num_timesteps} its last beta would be "
            f"{beta_end * scale:g} >= 1. Use T > {int(1000 * beta_end)} or the cosine schedule."
        )
    return from_betas(np.linspace(beta_start * scale, beta_end * scale, num_timesteps))


def cosine_schedule(num_timesteps: int = 1000, offset: float = 0.008) -> NoiseSchedule:
    """Nichol & Dhariwal: abar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2), betas <= 0.999."""
    steps = np.arange(num_timesteps + 1, dtype=np.float64)
    f = np.cos((steps / num_timesteps + offset) / (1 + offset) * np.pi / 2) ** 2
    abar = f / f[0]
    return from_betas(np.minimum(1.0 - abar[1:] / abar[:-1], 0.999))


SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}


def make_schedule(name: str, num_timesteps: int) -> NoiseSchedule:
    if name not in SCHEDULES:
        raise ValueError(f"Unknown noise schedule {name!r}; known: {', '.join(SCHEDULES)}.")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be at least 1, got {num_timesteps}.")
    return SCHEDULES[name](num_timesteps)


def q_sample(schedule: NoiseSchedule, x0, t, noise):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for one x0 and a scalar t."""
    return schedule.sqrt_alphas_cumprod[t] * x0 + schedule.sqrt_one_minus_alphas_cumprod[t] * noise


def x0_from_eps(x_t, eps, sqrt_abar, sqrt_one_minus_abar):
    """x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), the clean sample a noise estimate implies."""
    return (x_t - sqrt_one_minus_abar * eps) / sqrt_abar


def predict_x0(schedule: NoiseSchedule, x_t, t, eps):
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return x0_from_eps(x_t, eps, schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t])


def posterior_mean(schedule: NoiseSchedule, x0, x_t, t):
    """Mean of q(x_{t-1} | x_t, x_0) = coef_x0_t x_0 + coef_xt_t x_t."""
    return schedule.posterior_mean_coef_x0[t] * x0 + schedule.posterior_mean_coef_xt[t] * x_t


def ddpm_mean(schedule: NoiseSchedule, x_t, t, eps):
    """The DDPM reverse mean from a noise estimate: (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t).

    Equal to posterior_mean(predict_x0(x_t, t, eps), x_t, t); this is the reference's form (`ddpm_step` with
    the chain's coefficients at t, the arithmetic the samplers run).
    """
    return ddpm_step(chain_coefficients(schedule, t), x_t, eps)


def ddim_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """A decreasing subsequence of `steps` timesteps from T-1 (to 0 when steps > 1), evenly spaced."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(
            f"Cannot sample with {steps} steps from a schedule of T = {num_timesteps} timesteps: use 1 to {num_timesteps}."
        )
    return np.unique(np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32))[::-1].copy()


class DDIMCoefficients(NamedTuple):
    """Per step i of a decreasing timestep sequence tau: x_{tau_{i+1}} = a_i x0_hat + b_i eps_hat (eta = 0).

    timesteps: int32 `(S,)`; sqrt_abar, sqrt_one_minus_abar: at tau_i; sqrt_abar_next, sqrt_one_minus_abar_next:
    at the next timestep in the sequence, with abar = 1 after the last (the sample is x0_hat).
    """

    timesteps: jnp.ndarray
    sqrt_abar: jnp.ndarray
    sqrt_one_minus_abar: jnp.ndarray
    sqrt_abar_next: jnp.ndarray
    sqrt_one_minus_abar_next: jnp.ndarray


def ddim_coefficients(schedule: NoiseSchedule, timesteps) -> DDIMCoefficients:
    """DDIM coefficients for any strictly decreasing subsequence of 0 .. T-1."""
    timesteps = np.asarray(timesteps, np.int64)
    if timesteps.ndim != 1 or len(timesteps) == 0:
        raise ValueError("timesteps must be a non-empty 1-D sequence.")
    if np.any(np.diff(timesteps) >= 0) or timesteps[0] >= schedule.num_timesteps or timesteps[-1] < 0:
        raise ValueError(f"timesteps must be strictly decreasing within 0 .. {schedule.num_timesteps - 1}, got {timesteps}.")
    abar = np.asarray(schedule.alphas_cumprod, np.float64)[timesteps]
    abar_next = np.concatenate([abar[1:], [1.0]])
    return DDIMCoefficients(
        timesteps=jnp.asarray(timesteps, jnp.int32),
        sqrt_abar=jnp.asarray(np.sqrt(abar), jnp.float32),
        sqrt_one_minus_abar=jnp.asarray(np.sqrt(1.0 - abar), jnp.float32),
        sqrt_abar_next=jnp.asarray(np.sqrt(abar_next), jnp.float32),
        sqrt_one_minus_abar_next=jnp.asarray(np.sqrt(1.0 - abar_next), jnp.float32),
    )


def ddim_step(coefficient: DDIMCoefficients, x_t, eps):
    """One DDIM (eta = 0) step with one row of DDIMCoefficients: x_next = a x0_hat + b eps_hat."""
    x0 = x0_from_eps(x_t, eps, coefficient.sqrt_abar, coefficient.sqrt_one_minus_abar)
    return coefficient.sqrt_abar_next * x0 + coefficient.sqrt_one_minus_abar_next * eps


class DDPMCoefficients(NamedTuple):
    """Per step i of a decreasing timestep sequence tau, the DDPM step from tau_i to the next timestep:
    x_next = (x_t - eps_coef eps_hat) * sqrt_recip_alpha, plus noise_scale z (z ~ N(0, I)) when ancestral.

    All `(S,)` float32. Over every timestep these are the schedule's own beta_t / sqrt(1 - abar_t),
    1 / sqrt(alpha_t) and sqrt(beta_t) (0 at t = 0); over a subsequence, the respaced process's.
    """

    eps_coef: jnp.ndarray
    sqrt_recip_alpha: jnp.ndarray
    noise_scale: jnp.ndarray


def ddpm_coefficients(schedule: NoiseSchedule, timesteps) -> DDPMCoefficients:
    """DDPM coefficients for any strictly decreasing subsequence of 0 .. T-1.

    The whole chain T-1 .. 0 reads the schedule's arrays at each t (the reference's arithmetic, unchanged).
    A shorter one is the respaced process of Nichol & Dhariwal (2021): the same abar at the visited
    timesteps, alpha_i = abar_{tau_i} / abar_{tau_{i+1}} (abar = 1 after the last), beta_i = 1 - alpha_i.
    """
    timesteps = np.asarray(timesteps, np.int64)
    if timesteps.ndim != 1 or len(timesteps) == 0 or np.any(np.diff(timesteps) >= 0) or timesteps[0] >= schedule.num_timesteps or timesteps[-1] < 0:
        raise ValueError(f"timesteps must be strictly decreasing within 0 .. {schedule.num_timesteps - 1}, got {timesteps}.")
    if len(timesteps) == schedule.num_timesteps:
        return chain_coefficients(schedule, jnp.asarray(timesteps, jnp.int32))
    abar = np.asarray(schedule.alphas_cumprod, np.float64)[timesteps]
    alphas = abar / np.concatenate([abar[1:], [1.0]])
    betas = 1.0 - alphas
    noise_scale = np.concatenate([np.sqrt(betas[:-1]), [0.0]])
    return DDPMCoefficients(*(jnp.asarray(a, jnp.float32) for a in (betas / np.sqrt(1.0 - abar), 1.0 / np.sqrt(alphas), noise_scale)))


def chain_coefficients(schedule: NoiseSchedule, t) -> DDPMCoefficients:
    """The DDPM coefficients of the schedule's own chain at timestep(s) t: its arrays read at t."""
    return DDPMCoefficients(schedule.eps_coef[t], schedule.sqrt_recip_alphas[t], jnp.where(t > 0, jnp.sqrt(schedule.betas[t]), 0.0))


def ddpm_step(coefficient: DDPMCoefficients, x_t, eps):
    """The DDPM mean step with one row of DDPMCoefficients: (x_t - eps_coef eps) * sqrt_recip_alpha (the
    ancestral sampler adds noise_scale z itself)."""
    return (x_t - coefficient.eps_coef * eps) * coefficient.sqrt_recip_alpha


class LinearCoefficients(NamedTuple):
    """Per step of a sampler that moves x by a linear combination of itself and the noise estimate:
    x_next = x_scale x_t + eps_scale eps_hat, `(S,)` float32 each. DDIM (eta = 0) is one such sampler, with
    x_scale = sqrt(abar_next / abar) and eps_scale = sqrt(1 - abar_next) - x_scale sqrt(1 - abar)."""

    x_scale: jnp.ndarray
    eps_scale: jnp.ndarray


def linear_coefficients_of_ddim(schedule: NoiseSchedule, timesteps) -> LinearCoefficients:
    """DDIM's steps over `timesteps` written as linear steps (computed in float64)."""
    abar = np.asarray(schedule.alphas_cumprod, np.float64)[np.asarray(timesteps, np.int64)]
    abar_next = np.concatenate([abar[1:], [1.0]])
    x_scale = np.sqrt(abar_next / abar)
    eps_scale = np.sqrt(1.0 - abar_next) - x_scale * np.sqrt(1.0 - abar)
    return LinearCoefficients(jnp.asarray(x_scale, jnp.float32), jnp.asarray(eps_scale, jnp.float32))
