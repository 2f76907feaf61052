"""Task-conditional denoisers: eps_hat = denoiser(x_t, t, support set), for ONE task.

Every denoiser is a Flax module called as `module.apply(params, x_t, t, support_features, support_labels)`
with x_t `(ways, dim)`, t a scalar int, support_features `(n, dim)` and support_labels `(n,)`, and returns
`(ways, dim)`: the noise estimate, or (prediction "x0") the clean x_0 it implies; `noise_estimate` reads
either as the noise. They live in DENOISERS by name: a variant is one new entry. Batching over episodes is
vmap at the caller; t left unbatched there (as in the sampler, where every episode is at the same step)
keeps the time-embedding projections computed once for all episodes.

The diffusion runs over x = W - origin (`origin`): origin 0 (anchor "zero", the reference) diffuses the
weights W themselves from N(0, I); anchor "prototypes" diffuses the residual W - p from N(p, I), so that the
noise to predict never depends on where a class sits in feature space (docs/findings.md, "What matters").
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metadiff_jax import base_learner


def timestep_embedding(t, dim: int = 320):
    """Sinusoidal embedding of the integer t: [cos(t f_j), sin(t f_j)], f_j = 10000^(-j / (dim/2))."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class TorchDense(nn.Module):
    """A Dense layer initialised as torch.nn.Linear (weights and bias uniform in +-1/sqrt(fan_in)).

    The reference trains from PyTorch's initialisation; keeping it keeps the untrained denoiser's behaviour
    (and so the early training dynamics) the same.
    """

    features: int

    @nn.compact
    def __call__(self, x):
        bound = 1.0 / math.sqrt(x.shape[-1])
        uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
        kernel = self.param("kernel", uniform, (x.shape[-1], self.features))
        bias = self.param("bias", uniform, (self.features,))
        return x @ kernel + bias


# The TCUNet's conditions: those built on the support gradient at W_t, of which the last two also see p.
SEES_PROTOTYPES = ("normalized_gradient_and_prototypes", "normalized_gradient_and_gated_prototypes")
GRADIENT_CONDITIONS = ("gradient", "normalized_gradient", *SEES_PROTOTYPES)
CONDITIONS = (*GRADIENT_CONDITIONS, "prototypes", "none")
ANCHORS = ("zero", "prototypes")
PREDICTIONS = ("eps", "x0")


def origin(denoiser: nn.Module, support_features, support_labels, ways: int):
    """Where the denoiser's diffusion is centred, `(ways, dim)`: W = origin + x. Zeros, or (anchor
    "prototypes") the support prototypes."""
    if getattr(denoiser, "anchor", "zero") == "prototypes":
        return base_learner.prototypes(support_features, support_labels, ways)
    return jnp.zeros((ways, support_features.shape[-1]), support_features.dtype)


def _check_choices(module: nn.Module, **known: tuple[str, ...]) -> None:
    """Raises a ValueError naming the module's field and its known values when a field is not one of them."""
    for name, choices in known.items():
        value = getattr(module, name)
        if value not in choices:
            raise ValueError(f"Unknown {type(module).__name__} {name} {value!r}; known: {', '.join(choices)}.")


def predicts_x0(denoiser: nn.Module) -> bool:
    """Whether the denoiser's output is x_0 (prediction "x0") rather than the noise; a denoiser module
    without a `prediction` field (one a user brings) predicts the noise, as the reference's does."""
    return getattr(denoiser, "prediction", "eps") == "x0"


def noise_estimate(denoiser: nn.Module, schedule, params, x_t, t, support_features, support_labels):
    """The denoiser's estimate of the noise in x_t: its output, or for prediction "x0" the noise that its
    x_0 implies, (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)."""
    output = denoiser.apply(params, x_t, t, support_features, support_labels)
    if not predicts_x0(denoiser):
        return output
    return (x_t - schedule.sqrt_alphas_cumprod[t] * output) / schedule.sqrt_one_minus_alphas_cumprod[t]


class TCUNet(nn.Module):
    """The reference's task-conditional denoiser (DMFunc), for any ways, shots and feature dim.

    With g = dL_S/dW at W_t (the support-loss gradient, 2 n_k (W_k - p_k)) and e = emb(t):
      s   = sigmoid(Lin(1)(relu(Lin(time_dim/2)(e))))               one scalar gate per task
      h1  = softplus(Lin(d/2)(g) * Lin(d/2)(e))
      h2  = softplus(Lin(d/4)(h1) * Lin(d/4)(e))
      h3  = softplus(Lin(d/4)(h2) * Lin(d/4)(e)) + h2
      h4  = softplus(Lin(d/2)(h3) * Lin(d/2)(e)) + h1
      h5  = Lin(d)(h4) * Lin(d)(e) + g
      eps_hat = s g + (1 - s) h5
    Each class row is processed independently. At d = 512 this has 807,745 parameters, as the reference.

    condition: "gradient" is the reference's g = 2 n_k (W_k - p_k). Since eps_hat = g + (learned terms) and at
    high noise eps ~ W_t - p, that g is 2K times too large at K shots, and the MLP must learn to cancel it:
    at 5 shots training stalls (docs/findings.md). "normalized_gradient" feeds g / (2 n_k) = W_k - p_k instead,
    the same direction with the shot count divided out; parameters and everything else are unchanged.
    "normalized_gradient_and_prototypes" adds a learned projection of p itself to W_k - p_k, so that the
    denoiser knows where the class sits; "normalized_gradient_and_gated_prototypes" multiplies that projection
    by a learned gate of t in (0, 1), so that it can fade where the output should be x_t itself (an
    x0-predictor at low noise), instead of entering every step the same way. "prototypes" and "none" are
    ablations: g is a learned projection of [W_t, p] or of x_t alone.

    anchor: the origin of the diffusion (`origin`); the input x_t is W_t - origin, and the conditions see
    W_t = origin + x_t. prediction: "eps" (the reference) or "x0", what the output is trained to be.
    width: multiplies the hidden layers' sizes (d/2 and d/4 above). The reference sizes them by the feature
    dim, which leaves a 16-unit bottleneck at Conv-4's d = 64; width 4 gives that dim the widths d = 256 has.
    depth: how many of the narrow residual blocks (h3 above) run in a row; 1 is the reference.
    """

    dim: int
    time_dim: int = 320
    condition: str = "gradient"
    anchor: str = "zero"
    prediction: str = "eps"
    width: int = 1
    depth: int = 1

    def __post_init__(self):
        if self.width < 1:
            raise ValueError(f"TCUNet width must be a positive integer (a multiplier of the hidden sizes), got {self.width}.")
        if self.depth < 1:
            raise ValueError(f"TCUNet depth must be a positive integer (narrow residual blocks in a row), got {self.depth}.")
        _check_choices(self, condition=CONDITIONS, anchor=ANCHORS, prediction=PREDICTIONS)
        super().__post_init__()

    @nn.compact
    def __call__(self, x_t, t, support_features, support_labels):
        weights_t = origin(self, support_features, support_labels, x_t.shape[0]) + x_t
        emb = timestep_embedding(t, self.time_dim)
        if self.condition in GRADIENT_CONDITIONS:
            g = base_learner.support_gradient(weights_t, support_features, support_labels)
            if self.condition != "gradient":
                counts = base_learner.class_counts(support_labels, weights_t.shape[0])
                g = g / (2.0 * jnp.maximum(counts, 1.0))[:, None]
            if self.condition in SEES_PROTOTYPES:
                # W - p cannot say where the class sits; a ridge map can (docs/findings.md). A projection of p, zero at
                # initialisation so that training starts from the normalized_gradient denoiser.
                prototypes = base_learner.prototypes(support_features, support_labels, weights_t.shape[0])
                projection = nn.Dense(self.dim, kernel_init=nn.initializers.zeros)(prototypes)
                if self.condition == "normalized_gradient_and_gated_prototypes":
                    projection = projection * nn.sigmoid(nn.Dense(1)(emb))
                g = g + projection
        elif self.condition == "prototypes":
            # Ablation: W_t and the support prototypes as two inputs, mixed by a learned layer; the network may
            # learn W_t - p, but is not handed the gradient's structure.
            prototypes = base_learner.prototypes(support_features, support_labels, weights_t.shape[0])
            g = TorchDense(self.dim)(jnp.concatenate([weights_t, prototypes], axis=-1))
        else:  # "none"
            g = TorchDense(self.dim)(x_t)  # ablation: no support information at all (unconditional)
        gate = nn.sigmoid(TorchDense(1)(nn.relu(TorchDense(self.time_dim // 2)(emb))))
        wide, narrow = max(1, self.width * self.dim // 2), max(1, self.width * self.dim // 4)
        h1 = nn.softplus(TorchDense(wide)(g) * TorchDense(wide)(emb))
        h2 = nn.softplus(TorchDense(narrow)(h1) * TorchDense(narrow)(emb))
        h3 = h2
        for _ in range(self.depth):
            h3 = nn.softplus(TorchDense(narrow)(h3) * TorchDense(narrow)(emb)) + h3
        h4 = nn.softplus(TorchDense(wide)(h3) * TorchDense(wide)(emb)) + h1
        h5 = TorchDense(self.dim)(h4) * TorchDense(self.dim)(emb) + g
        return gate * g + (1.0 - gate) * h5


class EpisodeTransformer(nn.Module):
    """A denoiser that sees the whole support set, not one class row at a time (ProtoDiff's lever).

    One token per class, from [W_t,k - p_k, p_k] and the time embedding; each of `blocks` pre-norm blocks
    lets the class tokens attend to each other (where the other classes sit), then each class token attend
    to its own class's support features (their spread, not only their mean), then applies an MLP. The
    output is x_t plus a zero-initialised read-out, so the untrained denoiser predicts eps = x_t (what the
    TCUNet's gated residual starts near, and the noise itself at high noise with anchor "prototypes").
    Equivariant to permuting the classes, invariant to permuting the support examples within a class.
    """

    dim: int
    anchor: str = "zero"
    prediction: str = "eps"
    hidden: int = 128
    blocks: int = 2
    heads: int = 4
    time_dim: int = 320

    def __post_init__(self):
        _check_choices(self, anchor=ANCHORS, prediction=PREDICTIONS)
        super().__post_init__()

    @nn.compact
    def __call__(self, x_t, t, support_features, support_labels):
        ways = x_t.shape[0]
        prototypes = base_learner.prototypes(support_features, support_labels, ways)
        weights_t = origin(self, support_features, support_labels, ways) + x_t
        time = nn.Dense(self.hidden)(nn.gelu(nn.Dense(self.hidden)(timestep_embedding(t, self.time_dim))))
        tokens = nn.Dense(self.hidden)(jnp.concatenate([weights_t - prototypes, prototypes], -1)) + time
        support = nn.Dense(self.hidden)(jnp.concatenate([support_features - prototypes[support_labels], support_features], -1))
        own_class = (jnp.arange(ways)[:, None] == support_labels[None, :])[None]  # (1 head-broadcast, ways, n)
        for _ in range(self.blocks):
            tokens = tokens + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(tokens), nn.LayerNorm()(tokens))
            tokens = tokens + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(tokens), nn.LayerNorm()(support), mask=own_class)
            tokens = tokens + nn.Dense(self.hidden)(nn.gelu(nn.Dense(2 * self.hidden)(nn.LayerNorm()(tokens) + time)))
        return x_t + nn.Dense(self.dim, kernel_init=nn.initializers.zeros)(nn.LayerNorm()(tokens))


# Name -> constructor(dim) of a denoiser module.
DENOISERS: dict[str, Callable[..., nn.Module]] = {
    "tcunet": TCUNet,
    "episode_transformer": EpisodeTransformer,
}


def make_denoiser(name: str, dim: int, **kwargs) -> nn.Module:
    if name not in DENOISERS:
        raise ValueError(f"Unknown denoiser {name!r}; known: {', '.join(sorted(DENOISERS))}.")
    return DENOISERS[name](dim=dim, **kwargs)


def init_params(denoiser: nn.Module, rng, ways: int = 5, shots: int = 1):
    """Parameters of `denoiser` (they do not depend on ways or shots)."""
    dim = denoiser.dim
    labels = jnp.repeat(jnp.arange(ways), shots)
    return denoiser.init(rng, jnp.zeros((ways, dim)), jnp.zeros((), jnp.int32), jnp.zeros((ways * shots, dim)), labels)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))
