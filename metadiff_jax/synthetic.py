"""Synthetic few-shot features where the best class-mean estimate from K shots is not the support mean.

Class means lie near a low-rank affine subspace: mu_c = m + U z_c + tau n_c, with U `(dim, rank)` orthonormal,
z_c ~ N(0, I_rank) and a small off-subspace part n_c ~ N(0, I_dim / dim). An example of class c is
x = mu_c + sigma e, e ~ N(0, I_dim / dim). Base and novel classes share m and U (the structure a
meta-learner can learn from base classes) and nothing else. From one shot, the support mean carries all
the noise sigma^2; projecting it onto the subspace keeps only a rank/dim fraction of it, which is what a
trained denoiser can learn and an untrained one cannot.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from metadiff_jax.data.split import ClassIndexedSplit


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    dim: int = 64
    rank: int = 4
    mean_norm: float = 1.0  # |m|: a shared offset, as pooled ReLU features have
    subspace_scale: float = 1.0  # scale of U z
    off_subspace_scale: float = 0.1  # tau
    noise_scale: float = 1.5  # sigma: per-example noise, relative to a unit-norm direction
    base_classes: int = 64
    novel_classes: int = 100
    validation_classes: int = 50
    base_examples: int = 600
    novel_examples: int = 60
    seed: int = 0


def make_splits(config: SyntheticConfig) -> dict[str, ClassIndexedSplit]:
    """`train` (base classes), `test` (novel classes) and `validation` (other novel classes, for choosing
    settings) feature splits, float32, grouped by class."""
    rng = np.random.default_rng(config.seed)
    subspace, _ = np.linalg.qr(rng.standard_normal((config.dim, config.rank)))
    offset = rng.standard_normal(config.dim)
    offset *= config.mean_norm / np.linalg.norm(offset)
    per_dim = 1.0 / np.sqrt(config.dim)

    def split(name: str, num_classes: int, examples: int) -> ClassIndexedSplit:
        codes = rng.standard_normal((num_classes, config.rank)) * config.subspace_scale
        means = offset + codes @ subspace.T + config.off_subspace_scale * per_dim * rng.standard_normal((num_classes, config.dim))
        noise = config.noise_scale * per_dim * rng.standard_normal((num_classes, examples, config.dim))
        features = (means[:, None, :] + noise).reshape(-1, config.dim).astype(np.float32)
        starts = np.arange(num_classes + 1, dtype=np.int64) * examples
        return ClassIndexedSplit(images=features, class_starts=starts, identity=f"synthetic/{config.seed}/{name}")

    train = split("train", config.base_classes, config.base_examples)
    test = split("test", config.novel_classes, config.novel_examples)  # drawn before validation: test unchanged by it
    return {"train": train, "test": test, "validation": split("validation", config.validation_classes, config.novel_examples)}


def subspace_oracle_weights(config: SyntheticConfig, support_features, support_labels, ways: int) -> np.ndarray:
    """The oracle a linear method reaches: each support prototype projected onto the TRUE affine subspace
    m + span(U) of the class means (`(E, n, d), (E, n)` -> `(E, ways, d)`). Known here, never to a learner."""
    rng = np.random.default_rng(config.seed)
    subspace, _ = np.linalg.qr(rng.standard_normal((config.dim, config.rank)))
    offset = rng.standard_normal(config.dim)
    offset *= config.mean_norm / np.linalg.norm(offset)
    one_hot = np.eye(ways, dtype=np.float64)[np.asarray(support_labels)]
    prototypes = np.einsum("enk,end->ekd", one_hot, np.asarray(support_features, np.float64)) / one_hot.sum(axis=1)[..., None]
    return (offset + (prototypes - offset) @ subspace @ subspace.T).astype(np.float32)
