"""The rivals MetaDiff must beat: few-shot learners on the same frozen features and episodes that do not
diffuse. Each turns an episode's support set into the weights of the same cosine classifier MetaDiff
samples (ANIL aside, below), so only the way the weights are found differs.

  prototypes   W = the support prototypes p (the classifier of Classifier-Baseline); nothing learned from
               base classes; always in the table.
  finetuned    p, then `steps` gradient steps of the cosine classifier's cross-entropy on the support set.
  ridge        W = p A + b, a linear map from an episode's K-shot prototype to its class mean, fit by ridge
               regression on base-class draws: the linear one-step learner.
  anil         a linear head meta-learned with ANIL's second-order inner loop on the features (head only);
               see anil_learner (its classifier is the linear head it adapts, not the cosine one).
  regressor    MetaDiff's own denoiser trained to map the support set straight to the class means, one
               forward pass, no diffusion (metadiff_jax/regressor.py): does diffusion itself add anything?

RIVALS is the registry: name -> Rival(settings class, select function, row name). Every rival's
hyperparameters are chosen on validation episodes by `select` and only the choice is scored on the test
episodes. Adding a rival is a settings dataclass (its grid, with defaults), a select function and one entry.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metadiff_jax import base_learner, evaluate, query_loss
from metadiff_jax.baselines import gradient
from metadiff_jax.config_dict import FieldError
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


class Selected(NamedTuple):
    """A rival with its hyperparameters chosen on validation episodes, and its accuracies on the test episodes."""

    choice: dict
    validation_accuracy: float
    test_accuracies: np.ndarray


@dataclasses.dataclass(frozen=True)
class RivalContext:
    """What every rival is fit and chosen on.

    base_classes: the base (train) classes' features, grouped by class; spec: the episodes' shape; seed: for
    the rivals' own draws and training; validation / test: the fixed feature episodes (evaluate.FeatureEpisodes)
    on which settings are chosen / the choice is scored. train_denoiser(name, overrides) -> train.TrainedDenoiser:
    MetaDiff's denoiser trained with its settings changed by `overrides` (TrainConfig fields), restored where a
    run already trained it (the launch layer provides it; the regressor needs it).
    """

    base_classes: ClassIndexedSplit
    spec: episodes_lib.EpisodeSpec
    seed: int
    validation: Any
    test: Any
    train_denoiser: Callable[[str, dict], Any] | None = None


def select(candidates: list[dict], accuracies: Callable[[dict, object], np.ndarray], validation, test) -> Selected:
    """The candidate with the best mean accuracy on `validation` (the first of equals), scored on `test`.

    `accuracies(candidate, episodes)` -> per-episode accuracies. The test episodes are looked at once, for
    the chosen candidate only.
    """
    scores = [float(np.mean(accuracies(candidate, validation))) for candidate in candidates]
    best = int(np.argmax(scores))
    return Selected(dict(candidates[best]), scores[best], accuracies(candidates[best], test))


def weight_accuracies(weights, episodes, scale: float = 10.0) -> np.ndarray:
    """Per-episode query accuracy of cosine classifiers with `weights` `(E, ways, d)` on feature episodes."""
    return np.asarray(evaluate.episode_accuracies(jnp.asarray(weights), jnp.asarray(episodes.query_features), jnp.asarray(episodes.query_labels), scale))


def select_prototypes(context: RivalContext) -> Selected:
    """The prototype classifier: nothing to choose."""
    return select([{}], lambda _, e: evaluate.prototype_accuracies(e, context.spec.ways), context.validation, context.test)


# The fine-tuned cosine head.


@dataclasses.dataclass(frozen=True)
class FinetunedSettings:
    steps: tuple[int, ...] = (5, 10, 25, 50)  # gradient steps on the support set, searched
    learning_rates: tuple[float, ...] = (0.1, 0.5, 1.0)  # searched, every pair with `steps`


def finetuned_weights(support_features, support_labels, ways: int, steps: int, learning_rate: float, scale: float = 10.0):
    """`(E, n, d), (E, n)` -> `(E, ways, d)`: the prototypes after `steps` steps of cross-entropy on the support."""
    finetune = lambda f, y: base_learner.finetuned_prototypes(f, y, ways, steps, learning_rate, scale)
    return jax.jit(jax.vmap(finetune))(jnp.asarray(support_features), jnp.asarray(support_labels))


def select_finetuned(settings: FinetunedSettings, context: RivalContext) -> Selected:
    """The fine-tuned cosine classifier, its steps and learning rate chosen on validation."""
    ways = context.spec.ways
    candidates = [{"steps": int(s), "learning_rate": float(lr)} for s in settings.steps for lr in settings.learning_rates]
    accuracies = lambda c, e: weight_accuracies(finetuned_weights(e.support_features, e.support_labels, ways, c["steps"], c["learning_rate"]), e)
    return select(candidates, accuracies, context.validation, context.test)


# The ridge map from K-shot prototypes to class means.


@dataclasses.dataclass(frozen=True)
class RidgeSettings:
    draws_per_class: int = 200  # K-shot prototypes drawn per base class to fit the map on
    strengths: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)  # searched

    def __post_init__(self):
        if self.draws_per_class < 1:
            raise FieldError("draws_per_class", f"must be at least 1, got {self.draws_per_class}.")


@dataclasses.dataclass(frozen=True)
class RidgeMap:
    """W_k = p_k A + b: `matrix` `(d, d)`, `offset` `(d,)`."""

    matrix: np.ndarray
    offset: np.ndarray

    def weights(self, support_features, support_labels, ways: int) -> np.ndarray:
        prototypes = np.asarray(evaluate.prototype_weights(support_features, support_labels, ways), np.float64)
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


def select_ridge(settings: RidgeSettings, context: RivalContext) -> Selected:
    """The ridge map fit on base-class draws, its strength chosen on validation."""
    prototypes, means = prototype_draws(context.base_classes, context.spec.shots, settings.draws_per_class, context.seed)
    fits = {float(s): fit_ridge(prototypes, means, float(s)) for s in settings.strengths}
    accuracies = lambda c, e: weight_accuracies(fits[c["strength"]].weights(e.support_features, e.support_labels, context.spec.ways), e)
    return select([{"strength": s} for s in fits], accuracies, context.validation, context.test)


# ANIL's head on the features.


@dataclasses.dataclass(frozen=True)
class AnilSettings:
    inner_lrs: tuple[float, ...] = (0.1, 0.5, 2.0)  # searched: one meta-trained head per rate
    inner_steps: int = 10
    outer_lr: float = 1e-3
    steps: int = 2000  # outer steps
    meta_batch: int = 8  # episodes per outer step

    def __post_init__(self):
        for name in ("inner_steps", "steps", "meta_batch"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be at least 1, got {getattr(self, name)}.")


class IdentityBackbone(nn.Module):
    """ANIL's 'backbone' on frozen features: the episode's features are its input."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return x


def anil_learner(ways: int, inner_steps: int, inner_lr: float, outer_lr: float) -> gradient.GradientMetaLearner:
    """ANIL on frozen features: a meta-learned linear head, adapted by `inner_steps` SGD steps on the support."""
    config = gradient.GradientMetaConfig("anil", inner_steps, inner_lr, outer_lr, unroll=False)
    return gradient.GradientMetaLearner(IdentityBackbone(), ways, config)


def anil_accuracies(learner: gradient.GradientMetaLearner, state, episodes) -> np.ndarray:
    """Per-episode query accuracy of ANIL on feature episodes, vmapped (a linear head: no convolutions)."""
    accuracy = jax.jit(jax.vmap(lambda s, sy, q, qy: learner.query_accuracy(state, s, sy, q, qy)))
    arrays = (episodes.support_features, episodes.support_labels, episodes.query_features, episodes.query_labels)
    return np.asarray(accuracy(*(jnp.asarray(a) for a in arrays)))


def train_anil(learner: gradient.GradientMetaLearner, split: ClassIndexedSplit, spec: episodes_lib.EpisodeSpec, steps: int, meta_batch: int, seed: int):
    """ANIL's meta-training on feature episodes of the base classes; returns the final state."""
    state = learner.init(jax.random.PRNGKey(seed), np.zeros((1, split.images.shape[-1]), np.float32))
    step = jax.jit(learner.meta_train_step, donate_argnums=0)
    for batch in itertools.islice(episodes_lib.episode_batches(split, spec, seed, meta_batch), steps):
        state, _ = step(state, (batch.support_images, batch.support_labels, batch.query_images, batch.query_labels))
    return state


def select_anil(settings: AnilSettings, context: RivalContext) -> Selected:
    """ANIL on the features, one meta-trained head per inner learning rate, the rate chosen on validation."""
    trained = {}
    for inner_lr in settings.inner_lrs:
        learner = anil_learner(context.spec.ways, settings.inner_steps, float(inner_lr), settings.outer_lr)
        trained[float(inner_lr)] = (learner, train_anil(learner, context.base_classes, context.spec, settings.steps, settings.meta_batch, context.seed))
    accuracies = lambda c, e: anil_accuracies(*trained[c["inner_lr"]], e)
    selected = select([{"inner_lr": lr} for lr in trained], accuracies, context.validation, context.test)
    choice = {**selected.choice, "inner_steps": settings.inner_steps, "outer_steps": settings.steps, "meta_batch": settings.meta_batch}
    return selected._replace(choice=choice)


# The one-step regressor: MetaDiff's denoiser without diffusion.


@dataclasses.dataclass(frozen=True)
class RegressorSettings:
    steps: int | None = None  # outer training steps at most (None: as many as MetaDiff's)
    # Validations (one per checkpoint) without a new best before training stops; the best is tested. A
    # regressor's validation accuracy peaks early (at 1,000 of 20,000 steps on the default dataset, both shot
    # counts) and then falls. None trains every step and tests the last (the choice before this key).
    patience: int | None = 3

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise FieldError("steps", f"must be at least 1 (or unset: MetaDiff's), got {self.steps}.")
        if self.patience is not None and self.patience < 1:
            raise FieldError("patience", f"must be at least 1 (or unset: train every step), got {self.patience}.")


def select_regressor(settings: RegressorSettings, context: RivalContext) -> Selected:
    """MetaDiff's denoiser, settings and targets trained with the regression objective (no query loss), read
    in one forward pass."""
    if context.train_denoiser is None:
        raise ValueError("the regressor rival trains MetaDiff's denoiser: its RivalContext needs train_denoiser.")
    overrides = {"objective": "regression", "query_loss": query_loss.QueryLossConfig(), "patience": settings.patience}
    if settings.steps is not None:
        overrides["steps"] = settings.steps
    trained = context.train_denoiser("regressor", overrides)
    accuracies = lambda _, e: trained.evaluator(trained.params, e, jax.random.PRNGKey(context.seed))[0]
    return select([{"steps": trained.steps}], accuracies, context.validation, context.test)


class Rival(NamedTuple):
    """A registry entry: its settings dataclass (the config section `rivals.<name>`, with the defaults), its
    select function (settings, RivalContext) -> Selected, and the row it makes in results tables."""

    settings: type
    select: Callable[[Any, RivalContext], Selected]
    row: str


RIVALS: dict[str, Rival] = {
    "finetuned": Rival(FinetunedSettings, select_finetuned, "finetuned"),
    "ridge": Rival(RidgeSettings, select_ridge, "ridge"),
    "anil": Rival(AnilSettings, select_anil, "anil_features"),
    "regressor": Rival(RegressorSettings, select_regressor, "regressor"),
}
