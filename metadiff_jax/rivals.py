"""The rivals MetaDiff must beat: few-shot learners on the same frozen features and episodes that do not
diffuse. Each turns an episode's support set into the weights of the same cosine classifier MetaDiff
samples (ANIL aside, below), so only the way the weights are found differs.

  prototypes   W = the support prototypes p (the classifier of Classifier-Baseline); nothing learned from
               base classes; always in the table.
  prototypes_power
               the prototypes of power-transformed features (Tukey's x -> x^beta, beta chosen on validation).
  logistic     multinomial logistic regression on L2-normalised (optionally power-transformed) features, fit
               to each support set (RFS-simple's classifier; its own linear classifier, not the cosine one).
  finetuned    p, then `steps` gradient steps of the cosine classifier's cross-entropy on the support set.
  ridge        W = p A + b, a linear map from an episode's K-shot prototype to its class mean, fit by ridge
               regression on base-class draws: the linear one-step learner.
  anil         a linear head meta-learned with ANIL's second-order inner loop on the (L2-normalised)
               features, trained until validation stops rising; see anil_learner (its classifier is the
               linear head it adapts, not the cosine one).
  regressor    MetaDiff's own denoiser trained to map the support set straight to the class means, one
               forward pass, no diffusion (metadiff_jax/regressor.py): does diffusion itself add anything?

RIVALS is the registry: name -> Rival(settings class, select function, row name). Every rival's
hyperparameters are chosen on validation episodes by `select` and only the choice is scored on the test
episodes. Adding a rival is a settings dataclass (its grid, with defaults), a select function and one entry.

One rule for every learned row (MetaDiff, the regressor, ANIL): its training is scored on the first
EARLY_STOPPING_EPISODES validation episodes at regular checks, stops after `patience` checks in a row
without a new best, and the best state is tested; its learning rate is one more setting chosen on the
validation episodes (a grid here, variants for MetaDiff: configs/ablations.py).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metadiff_jax import base_learner, config_dict, evaluate, query_loss
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


# Transforms of the frozen features, searched by the rows that offer them.


def power_transform(features, exponent: float) -> np.ndarray:
    """Tukey's ladder of powers, x -> sign(x) |x|^exponent (1 leaves the features as they are): pooled ReLU
    features are non-negative and skewed, and a root makes them closer to Gaussian, which prototypes and
    linear classifiers implicitly assume (Yang et al. 2021 found it stronger than their calibration at 5 shots)."""
    features = np.asarray(features, np.float32)
    if exponent == 1.0:
        return features
    return (np.sign(features) * np.abs(features) ** np.float32(exponent)).astype(np.float32)


def unit_rows(features) -> np.ndarray:
    """Each feature vector divided by its L2 norm (zero vectors stay zero)."""
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), np.float32(1e-12))


def transformed_episodes(episodes, transform: Callable[[np.ndarray], np.ndarray]):
    """Feature episodes with `transform` applied to every support and query feature."""
    return episodes._replace(support_features=transform(episodes.support_features), query_features=transform(episodes.query_features))


def memoized(accuracies: Callable[[dict, object], np.ndarray], key: Callable[[dict], tuple]) -> Callable[[dict, object], np.ndarray]:
    """`accuracies(candidate, episodes)` computed once per (key(candidate), episode set): candidates that share
    a fit (several step counts read off one run) cost one."""
    cache = {}

    def cached(candidate, episodes):
        index = (key(candidate), id(episodes))
        if index not in cache:
            cache[index] = accuracies(candidate, episodes)
        return cache[index]

    return cached


@dataclasses.dataclass(frozen=True)
class PowerPrototypeSettings:
    # Searched; 1.0 is the plain prototype classifier. On the default dataset's features 1.0 won the grid
    # (0.25 ... 1.0) at both shot counts, so the grid reaches past it.
    exponents: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)

    def __post_init__(self):
        config_dict.check_grid(self, "exponents", "positive exponents")


def select_power_prototypes(settings: PowerPrototypeSettings, context: RivalContext) -> Selected:
    """The prototype classifier on power-transformed features, the exponent chosen on validation."""
    accuracies = lambda c, e: evaluate.prototype_accuracies(transformed_episodes(e, lambda f: power_transform(f, c["exponent"])), context.spec.ways)
    return select([{"exponent": float(b)} for b in settings.exponents], accuracies, context.validation, context.test)


# Logistic regression on each episode's support set.


@dataclasses.dataclass(frozen=True)
class LogisticSettings:
    # The L2 penalty lambda of mean cross-entropy + lambda ||W||^2 (the bias is not penalised), searched.
    # scikit-learn's default C = 1 (RFS-simple's setting) is lambda = 1 / (2 n): 0.1 at 5-way 1-shot, 0.02 at 5-shot.
    strengths: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    # Gradient steps of the fit, searched (all read off one run): few steps from zero are a shrunk fit, and 10
    # won at 1 shot on the default dataset's features.
    steps: tuple[int, ...] = (3, 10, 30, 100, 300, 1000)
    power_exponents: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)  # features power-transformed before the L2 normalisation, searched
    momentum: float = 0.9

    def __post_init__(self):
        config_dict.check_grid(self, "strengths", "penalties of 0 or more", inclusive=True)
        config_dict.check_grid(self, "steps", "step counts of at least 1", smallest=1, inclusive=True)
        config_dict.check_grid(self, "power_exponents", "positive exponents")
        if not 0.0 <= self.momentum < 1.0:
            raise FieldError("momentum", f"must be in [0, 1), got {self.momentum}.")


def logistic_regression_accuracies(support_features, support_labels, query_features, query_labels, ways: int, strength: float, steps, momentum: float = 0.9):
    """Per-episode query accuracies `(len(steps), E)` of multinomial logistic regression on L2-normalised
    features, fit to each support set by heavy-ball gradient descent from zero on mean cross-entropy +
    strength ||W||^2 (bias unpenalised), read after each step count of `steps`.

    Gradient descent from W = 0 keeps W in the span of the support features, W = A^T X, so the fit runs on
    the `(n, n)` Gram matrix of the support: the primal's iterates exactly, at n^2 x ways a step instead of
    n x d x ways. The step size 1 / (1 + 2 strength) is 1 / the loss's largest curvature: mean cross-entropy's
    is at most 1/2 ||(x, 1)||^2 = 1 for unit features x.
    """
    steps = np.asarray(steps, np.int32)
    support, query = jnp.asarray(unit_rows(support_features)), jnp.asarray(unit_rows(query_features))
    targets = jax.nn.one_hot(jnp.asarray(support_labels), ways)
    learning_rate = 1.0 / (1.0 + 2.0 * strength)

    @jax.jit
    def fit(support, targets, query, query_labels):
        gram = jnp.einsum("end,emd->enm", support, support)
        query_gram = jnp.einsum("eqd,emd->eqm", query, support)
        shots = support.shape[1]

        def step(carry, _):
            coefficients, bias, velocity_coefficients, velocity_bias = carry
            residual = jax.nn.softmax(jnp.einsum("enm,emw->enw", gram, coefficients) + bias[:, None], -1) - targets
            velocity_coefficients = momentum * velocity_coefficients + residual / shots + 2.0 * strength * coefficients
            velocity_bias = momentum * velocity_bias + residual.mean(axis=1)
            coefficients = coefficients - learning_rate * velocity_coefficients
            bias = bias - learning_rate * velocity_bias
            logits = jnp.einsum("eqm,emw->eqw", query_gram, coefficients) + bias[:, None]
            return (coefficients, bias, velocity_coefficients, velocity_bias), jnp.mean(jnp.argmax(logits, -1) == query_labels, axis=-1)

        zeros = (jnp.zeros_like(targets), jnp.zeros(targets.shape[::2], targets.dtype))
        _, accuracies = jax.lax.scan(step, (*zeros, *zeros), None, length=int(steps.max()))
        return accuracies

    return np.asarray(fit(support, targets, query, jnp.asarray(query_labels)))[steps - 1]


def select_logistic(settings: LogisticSettings, context: RivalContext) -> Selected:
    """Logistic regression fit to each support set; its penalty, steps and feature exponent chosen on validation."""

    def fit(candidate, episodes):
        episodes = transformed_episodes(episodes, lambda f: power_transform(f, candidate["power_exponent"]))
        arrays = (episodes.support_features, episodes.support_labels, episodes.query_features, episodes.query_labels)
        per_steps = logistic_regression_accuracies(*arrays, context.spec.ways, candidate["strength"], settings.steps, settings.momentum)
        return dict(zip(settings.steps, per_steps))

    fits = memoized(fit, lambda c: (c["power_exponent"], c["strength"]))
    grid = itertools.product(settings.power_exponents, settings.strengths, settings.steps)
    candidates = [{"power_exponent": float(b), "strength": float(lam), "steps": int(n)} for b, lam, n in grid]
    return select(candidates, lambda c, e: fits(c, e)[c["steps"]], context.validation, context.test)


# The fine-tuned cosine head.


@dataclasses.dataclass(frozen=True)
class FinetunedSettings:
    # Searched, every pair. On the default dataset 50 steps (1 shot) and rate 0.1 (5 shots) won at the edges of
    # (5 ... 50) x (0.1 ... 1.0), so the grid reaches past both.
    steps: tuple[int, ...] = (5, 10, 25, 50, 100)
    learning_rates: tuple[float, ...] = (0.03, 0.1, 0.5, 1.0)


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
    # Searched. 1e5 (the prototypes, nearly) won at 5 shots on the default dataset, so the grid reaches past it.
    strengths: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1e6, 1e7)

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

# Validation episodes (the first of the choice's) on which a learned row's training is checked for early
# stopping: the count MetaDiff's checkpoints are scored on (configs/default.py's checkpoint.validation_episodes).
EARLY_STOPPING_EPISODES = 100


@dataclasses.dataclass(frozen=True)
class AnilSettings:
    # Searched, every pair: one meta-trained head each. On unit-norm features a head's logits move by about
    # inner_lr / (ways x shots) a step, so useful inner rates are larger than on raw features.
    inner_lrs: tuple[float, ...] = (1.0, 4.0, 16.0)
    outer_lrs: tuple[float, ...] = (1e-3,)
    inner_steps: int = 10
    steps: int = 20_000  # outer steps at most
    meta_batch: int = 8  # episodes per outer step
    normalize: bool = True  # L2-normalise the features first (False: the raw features, the choice before this key)
    validate_every: int = 500  # outer steps between early-stopping checks
    patience: int | None = 3  # checks without a new best before training stops (None: train every step, test the last)

    def __post_init__(self):
        config_dict.check_counts(self, "inner_steps", "steps", "meta_batch", "validate_every")
        if self.patience is not None and self.patience < 1:
            raise FieldError("patience", f"must be at least 1 (or unset: train every step), got {self.patience}.")
        for name in ("inner_lrs", "outer_lrs"):
            config_dict.check_grid(self, name, "positive rates")


class IdentityBackbone(nn.Module):
    """ANIL's 'backbone' on frozen features: the episode's features are its input."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return x


def anil_learner(ways: int, inner_steps: int, inner_lr: float, outer_lr: float) -> gradient.GradientMetaLearner:
    """ANIL on frozen features: a meta-learned linear head, adapted by `inner_steps` SGD steps on the support."""
    config = gradient.GradientMetaConfig("anil", inner_steps, inner_lr, outer_lr, unroll=False)
    return gradient.GradientMetaLearner(IdentityBackbone(), ways, config)


@functools.lru_cache(maxsize=32)
def _episode_accuracies(learner: gradient.GradientMetaLearner):
    """One compiled accuracy per learner, the state an argument: early stopping scores many states of one learner."""
    return jax.jit(jax.vmap(learner.query_accuracy, in_axes=(None, 0, 0, 0, 0)))


def anil_accuracies(learner: gradient.GradientMetaLearner, state, episodes) -> np.ndarray:
    """Per-episode query accuracy of ANIL on feature episodes, vmapped (a linear head: no convolutions)."""
    arrays = (episodes.support_features, episodes.support_labels, episodes.query_features, episodes.query_labels)
    return np.asarray(_episode_accuracies(learner)(state, *(jnp.asarray(a) for a in arrays)))


def train_anil(
    learner: gradient.GradientMetaLearner, split: ClassIndexedSplit, spec: episodes_lib.EpisodeSpec, steps: int, meta_batch: int, seed: int,
    validation=None, validate_every: int = 500, patience: int | None = None,
):
    """ANIL's meta-training on feature episodes of the base classes; returns (state, step) of the state to test.

    With `validation` (feature episodes) and `patience`, the state is scored every `validate_every` steps,
    training stops after `patience` scores in a row without a new best, and the best state is returned;
    otherwise the state after `steps` steps.
    """
    state = learner.init(jax.random.PRNGKey(seed), np.zeros((1, split.images.shape[-1]), np.float32))
    step = jax.jit(learner.meta_train_step, donate_argnums=0)
    best, best_state, best_step, since_best = -1.0, None, 0, 0
    for index, batch in enumerate(itertools.islice(episodes_lib.episode_batches(split, spec, seed, meta_batch), steps), start=1):
        state, _ = step(state, (batch.support_images, batch.support_labels, batch.query_images, batch.query_labels))
        if validation is None or patience is None or index % validate_every:
            continue
        accuracy = float(anil_accuracies(learner, state, validation).mean())
        if accuracy > best:
            best, best_state, best_step, since_best = accuracy, jax.device_get(state), index, 0  # a copy: `state` is donated next step
        else:
            since_best += 1
            if since_best >= patience:
                break
    return (state, steps) if best_state is None else (best_state, best_step)


def select_anil(settings: AnilSettings, context: RivalContext) -> Selected:
    """ANIL on the features, one meta-trained head per (inner, outer) learning rate, trained until its score on
    the first EARLY_STOPPING_EPISODES validation episodes stops rising; the rates chosen on validation."""
    transform = unit_rows if settings.normalize else np.asarray
    split = dataclasses.replace(context.base_classes, images=transform(context.base_classes.images))
    validation, test = (transformed_episodes(e, transform) for e in (context.validation, context.test))
    stopping = jax.tree_util.tree_map(lambda a: a[:EARLY_STOPPING_EPISODES], validation)
    trained = {}
    for inner_lr, outer_lr in itertools.product(settings.inner_lrs, settings.outer_lrs):
        learner = anil_learner(context.spec.ways, settings.inner_steps, float(inner_lr), float(outer_lr))
        state, tested_step = train_anil(
            learner, split, context.spec, settings.steps, settings.meta_batch, context.seed, stopping, settings.validate_every, settings.patience
        )
        trained[(float(inner_lr), float(outer_lr))] = (learner, state, tested_step)
    accuracies = lambda c, e: anil_accuracies(*trained[(c["inner_lr"], c["outer_lr"])][:2], e)
    selected = select([{"inner_lr": i, "outer_lr": o} for i, o in trained], accuracies, validation, test)
    tested_step = trained[(selected.choice["inner_lr"], selected.choice["outer_lr"])][2]
    choice = {**selected.choice, "inner_steps": settings.inner_steps, "outer_steps": tested_step, "meta_batch": settings.meta_batch}
    choice["normalize"] = settings.normalize
    return selected._replace(choice=choice)


# The one-step regressor: MetaDiff's denoiser without diffusion.


@dataclasses.dataclass(frozen=True)
class RegressorSettings:
    steps: int | None = None  # outer training steps at most (None: as many as MetaDiff's)
    # Validations (one per checkpoint) without a new best before training stops; the best is tested. A
    # regressor's validation accuracy peaks early (at 1,000 of 20,000 steps on the default dataset, both shot
    # counts) and then falls. None trains every step and tests the last (the choice before this key).
    patience: int | None = 3
    # Searched: one regressor trained per rate (empty: MetaDiff's own learning rate only).
    learning_rates: tuple[float, ...] = ()

    def __post_init__(self):
        if self.steps is not None and self.steps < 1:
            raise FieldError("steps", f"must be at least 1 (or unset: MetaDiff's), got {self.steps}.")
        if self.patience is not None and self.patience < 1:
            raise FieldError("patience", f"must be at least 1 (or unset: train every step), got {self.patience}.")
        if self.learning_rates and min(self.learning_rates) <= 0:
            raise FieldError("learning_rates", f"must be positive rates (or empty: MetaDiff's), got {self.learning_rates}.")


def select_regressor(settings: RegressorSettings, context: RivalContext) -> Selected:
    """MetaDiff's denoiser, settings and targets trained with the regression objective (no query loss), read
    in one forward pass; one per learning rate of the grid, the rate chosen on validation."""
    if context.train_denoiser is None:
        raise ValueError("the regressor rival trains MetaDiff's denoiser: its RivalContext needs train_denoiser.")
    overrides = {"objective": "regression", "query_loss": query_loss.QueryLossConfig(), "patience": settings.patience}
    if settings.steps is not None:
        overrides["steps"] = settings.steps
    trained = {}
    for learning_rate in settings.learning_rates or (None,):
        # MetaDiff's own rate keeps the name "regressor" (its checkpoints in runs made before the grid).
        rate = {} if learning_rate is None else {"learning_rate": float(learning_rate)}
        trained[learning_rate] = context.train_denoiser("regressor" if learning_rate is None else f"regressor_lr{learning_rate:g}", {**overrides, **rate})
    choice = lambda rate: {"steps": trained[rate].tested_step, **({} if rate is None else {"learning_rate": float(rate)})}
    accuracies = lambda c, e: trained[c.get("learning_rate")].evaluator(trained[c.get("learning_rate")].params, e, jax.random.PRNGKey(context.seed))[0]
    return select([choice(rate) for rate in trained], accuracies, context.validation, context.test)


class Rival(NamedTuple):
    """A registry entry: its settings dataclass (the config section `rivals.<name>`, with the defaults), its
    select function (settings, RivalContext) -> Selected, and the row it makes in results tables."""

    settings: type
    select: Callable[[Any, RivalContext], Selected]
    row: str


RIVALS: dict[str, Rival] = {
    "prototypes_power": Rival(PowerPrototypeSettings, select_power_prototypes, "prototypes_power"),
    "logistic": Rival(LogisticSettings, select_logistic, "logistic"),
    "finetuned": Rival(FinetunedSettings, select_finetuned, "finetuned"),
    "ridge": Rival(RidgeSettings, select_ridge, "ridge"),
    "anil": Rival(AnilSettings, select_anil, "anil_features"),
    "regressor": Rival(RegressorSettings, select_regressor, "regressor"),
}
