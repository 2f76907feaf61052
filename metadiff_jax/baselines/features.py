"""Few-shot learners on frozen features that do not diffuse: the rivals MetaDiff must beat on the same
features and the same episodes. Each turns an episode's support set into the weights of the same cosine
classifier MetaDiff samples, so only the way the weights are found differs.

  prototypes   W = the support prototypes p (Meta-Baseline); nothing learned from base classes.
  finetuned    p, then `steps` gradient steps of the cosine classifier's cross-entropy on the support set.
  ridge        W = p A + b, a linear map from an episode's K-shot prototype to its class mean, fit by ridge
               regression on base-class draws: the linear one-step learner.
  anil         a linear head meta-learned with ANIL's second-order inner loop on the features (head only);
               see anil_learner (its classifier is the linear head it adapts, not the cosine one).

The one-step regressor (MetaDiff's own denoiser trained to map the support set straight to the class means,
one forward pass, no diffusion) is MetaDiff's training with `TrainConfig.objective = "regression"`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metadiff_jax import base_learner, evaluate
from metadiff_jax.baselines import gradient
from metadiff_jax.config_dict import FieldError
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


def prototype_weights(support_features, support_labels, ways: int):
    """`(E, n, d), (E, n)` -> `(E, ways, d)`: the support prototypes."""
    return jax.vmap(lambda f, y: base_learner.prototypes(f, y, ways))(jnp.asarray(support_features), jnp.asarray(support_labels))


def finetuned_weights(support_features, support_labels, ways: int, steps: int, learning_rate: float, scale: float = 10.0):
    """`(E, n, d), (E, n)` -> `(E, ways, d)`: the prototypes after `steps` steps of cross-entropy on the support."""
    finetune = lambda f, y: base_learner.finetuned_prototypes(f, y, ways, steps, learning_rate, scale)
    return jax.jit(jax.vmap(finetune))(jnp.asarray(support_features), jnp.asarray(support_labels))


@dataclasses.dataclass(frozen=True)
class RidgeMap:
    """W_k = p_k A + b: `matrix` `(d, d)`, `offset` `(d,)`."""

    matrix: np.ndarray
    offset: np.ndarray

    def weights(self, support_features, support_labels, ways: int) -> np.ndarray:
        prototypes = np.asarray(prototype_weights(support_features, support_labels, ways), np.float64)
        return (prototypes @ self.matrix + self.offset).astype(np.float32)


def prototype_draws(split: ClassIndexedSplit, shots: int, draws_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(K-shot prototypes `(classes * draws, d)`, their classes' means `(classes * draws, d)`): for every class
    of `split`, `draws_per_class` prototypes of `shots` distinct examples drawn at random."""
    rng = np.random.default_rng(seed)
    features = np.asarray(split.images, np.float64)
    prototypes, means = [], []
    for c in range(split.num_classes):
        rows = features[split.class_starts[c] : split.class_starts[c + 1]]
        picks = np.stack([rng.choice(len(rows), shots, replace=False) for _ in range(draws_per_class)])
        prototypes.append(rows[picks].mean(axis=1))
        means.append(np.broadcast_to(rows.mean(axis=0), (draws_per_class, rows.shape[1])))
    return np.concatenate(prototypes), np.concatenate(means)


def fit_ridge(prototypes: np.ndarray, means: np.ndarray, strength: float) -> RidgeMap:
    """argmin_{A, b} sum ||p A + b - mu||^2 + strength ||A - I||^2: shrinks towards the prototypes (A = I),
    so a large strength is the prototype classifier and a small one the least-squares map."""
    if strength < 0:
        raise FieldError("strength", f"must be 0 or more, got {strength}.")
    p_mean, mu_mean = prototypes.mean(axis=0), means.mean(axis=0)
    p, mu = prototypes - p_mean, means - mu_mean
    dim = p.shape[1]
    gram = p.T @ p + strength * np.eye(dim)
    matrix = np.linalg.solve(gram, p.T @ mu + strength * np.eye(dim))
    return RidgeMap(matrix, mu_mean - p_mean @ matrix)


class Features(nn.Module):
    """The identity 'backbone' of ANIL on frozen features: the episode's features are its input."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return x


def anil_learner(ways: int, inner_steps: int, inner_lr: float, outer_lr: float) -> gradient.GradientMetaLearner:
    """ANIL on frozen features: a meta-learned linear head, adapted by `inner_steps` SGD steps on the support."""
    config = gradient.GradientMetaConfig("anil", inner_steps, inner_lr, outer_lr, unroll=False)
    return gradient.GradientMetaLearner(Features(), ways, config)


def anil_accuracies(learner: gradient.GradientMetaLearner, state, episodes) -> np.ndarray:
    """Per-episode query accuracy of ANIL on feature episodes, vmapped (a linear head: no convolutions)."""
    accuracy = jax.jit(jax.vmap(lambda s, sy, q, qy: learner.query_accuracy(state, s, sy, q, qy)))
    arrays = (episodes.support_features, episodes.support_labels, episodes.query_features, episodes.query_labels)
    return np.asarray(accuracy(*(jnp.asarray(a) for a in arrays)))


def weight_accuracies(weights, episodes, scale: float = 10.0) -> np.ndarray:
    """Per-episode query accuracy of cosine classifiers with `weights` `(E, ways, d)` on feature episodes."""
    return np.asarray(evaluate.episode_accuracies(jnp.asarray(weights), jnp.asarray(episodes.query_features), jnp.asarray(episodes.query_labels), scale))


def train_anil(learner: gradient.GradientMetaLearner, split: ClassIndexedSplit, spec: episodes_lib.EpisodeSpec, steps: int, meta_batch: int, seed: int):
    """ANIL's meta-training on feature episodes of the base classes; returns the final state."""
    state = learner.init(jax.random.PRNGKey(seed), np.zeros((1, split.images.shape[-1]), np.float32))
    step = jax.jit(learner.meta_train_step, donate_argnums=0)
    for batch in itertools.islice(episodes_lib.episode_batches(split, spec, seed, meta_batch), steps):
        state, _ = step(state, (batch.support_images, batch.support_labels, batch.query_images, batch.query_labels))
    return state


class Selected(NamedTuple):
    """A rival with its hyperparameters chosen on validation episodes, and its accuracies on the test episodes."""

    choice: dict
    validation_accuracy: float
    test_accuracies: np.ndarray


def select(candidates: list[dict], accuracies: Callable[[dict, object], np.ndarray], validation, test) -> Selected:
    """The candidate with the best mean accuracy on `validation` (the first of equals), scored on `test`.

    `accuracies(candidate, episodes)` -> per-episode accuracies. The test episodes are looked at once, for
    the chosen candidate only.
    """
    scores = [float(np.mean(accuracies(candidate, validation))) for candidate in candidates]
    best = int(np.argmax(scores))
    return Selected(dict(candidates[best]), scores[best], accuracies(candidates[best], test))


def select_finetuned(validation, test, ways: int, steps: tuple[int, ...], learning_rates: tuple[float, ...]) -> Selected:
    """The fine-tuned cosine classifier, its steps and learning rate chosen on validation."""
    candidates = [{"steps": int(s), "learning_rate": float(lr)} for s in steps for lr in learning_rates]
    accuracies = lambda c, e: weight_accuracies(finetuned_weights(e.support_features, e.support_labels, ways, c["steps"], c["learning_rate"]), e)
    return select(candidates, accuracies, validation, test)


def select_ridge(train: ClassIndexedSplit, shots: int, draws_per_class: int, strengths: tuple[float, ...], seed: int, validation, test, ways: int) -> Selected:
    """The ridge map fit on base-class draws, its strength chosen on validation."""
    prototypes, means = prototype_draws(train, shots, draws_per_class, seed)
    fits = {float(s): fit_ridge(prototypes, means, float(s)) for s in strengths}
    accuracies = lambda c, e: weight_accuracies(fits[c["strength"]].weights(e.support_features, e.support_labels, ways), e)
    return select([{"strength": s} for s in fits], accuracies, validation, test)


def select_anil(
    train: ClassIndexedSplit, spec, inner_lrs: tuple[float, ...], inner_steps: int, outer_lr: float, steps: int, meta_batch: int, seed: int, validation, test
) -> Selected:
    """ANIL on the features, one meta-trained head per inner learning rate, the rate chosen on validation."""
    trained = {}
    for inner_lr in inner_lrs:
        learner = anil_learner(spec.ways, inner_steps, float(inner_lr), outer_lr)
        trained[float(inner_lr)] = (learner, train_anil(learner, train, spec, steps, meta_batch, seed))
    accuracies = lambda c, e: anil_accuracies(*trained[c["inner_lr"]], e)
    selected = select([{"inner_lr": lr} for lr in trained], accuracies, validation, test)
    return selected._replace(choice={**selected.choice, "inner_steps": inner_steps, "outer_steps": steps, "meta_batch": meta_batch})
