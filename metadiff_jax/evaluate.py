"""Evaluation on fixed episodes: accuracy +- 95% CI, paired differences, accuracy along the sampler.

CI convention (the reference's and the field's): mean +- 1.96 * std / sqrt(n) over per-episode accuracies,
std with ddof = 0. A paired difference is the same statistic over per-episode differences between two
methods on the same episodes, which is far tighter than comparing two independent intervals.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import PartitionSpec

from metadiff_jax import base_learner, keys, parallel
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit
from metadiff_jax.feature_splits import InputError, check_features


class FeatureEpisodes(NamedTuple):
    """Episodes over features: support `(E, ways * shots, d)` / `(E, ways * shots)`, query likewise."""

    support_features: np.ndarray
    support_labels: np.ndarray
    query_features: np.ndarray
    query_labels: np.ndarray


def episodes_from_plan(split: ClassIndexedSplit, plan: episodes_lib.EpisodePlan) -> FeatureEpisodes:
    """The feature episodes a plan names (the same plan gathers the images of the same episodes)."""
    batch = episodes_lib.gather(split, plan)
    return FeatureEpisodes(batch.support_images, batch.support_labels, batch.query_images, batch.query_labels)


def fixed_episodes(split: ClassIndexedSplit, spec: episodes_lib.EpisodeSpec, count: int = 600, seed: int = 0) -> tuple[FeatureEpisodes, str]:
    """The fixed test episodes 0 .. count-1 of `seed` over a feature split, and the sha256 of their plan."""
    plan = episodes_lib.sample_plan(split, spec, seed, np.arange(count))
    return episodes_from_plan(split, plan), episodes_lib.plan_hash(plan)


def check_episodes(episodes: FeatureEpisodes, ways: int, dim: int | None = None) -> None:
    """Raises InputError for shapes that disagree (with each other, or with `dim` where given), labels outside
    0..ways-1, an empty class, or NaN/Inf."""
    support, query = np.asarray(episodes.support_features), np.asarray(episodes.query_features)
    if support.ndim != 3 or query.ndim != 3:
        raise InputError(
            f"features must be (episodes, examples, dim); got support {support.shape} and query {query.shape}."
        )
    dim = support.shape[-1] if dim is None else dim
    for name, features in (("support", support), ("query", query)):
        check_features(features, dim, name)
    for name, features, labels in (
        ("support", support, episodes.support_labels),
        ("query", query, episodes.query_labels),
    ):
        labels = np.asarray(labels)
        if labels.shape != features.shape[:2]:
            raise InputError(f"{name} labels have shape {labels.shape}, expected {features.shape[:2]} (one per example).")
        if labels.min() < 0 or labels.max() >= ways:
            raise InputError(
                f"{name} labels run from {labels.min()} to {labels.max()} but ways = {ways}: labels must be 0 .. {ways - 1}."
            )
    counts = np.stack([np.bincount(row, minlength=ways) for row in np.asarray(episodes.support_labels)])
    if np.any(counts == 0):
        episode = int(np.argwhere(counts == 0)[0][0])
        raise InputError(f"episode {episode} has a class with no support example; every one of the {ways} ways needs one.")


def mean_ci95(values) -> tuple[float, float]:
    """(mean, 1.96 * std / sqrt(n)) of per-episode values."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values)))


@dataclasses.dataclass(frozen=True)
class MethodResult:
    method: str
    ways: int
    shots: int
    episodes: int
    accuracy: float
    ci95: float
    paired_diff: float | None = None  # against a reference method on the same episodes
    paired_ci95: float | None = None

    def row(self) -> dict:
        """The result as a results-file row, in percent and points rounded to 2 decimals (units in the keys)."""
        points = lambda value: None if value is None else round(100 * value, 2)
        return {
            "method": self.method,
            "ways": self.ways,
            "shots": self.shots,
            "episodes": self.episodes,
            "accuracy_percent": points(self.accuracy),
            "ci95_percent": points(self.ci95),
            "paired_diff_points": points(self.paired_diff),
            "paired_ci95_points": points(self.paired_ci95),
        }


def summarize(method: str, accuracies, ways: int, shots: int, reference=None) -> MethodResult:
    """Accuracy +- CI of one method, and its paired difference against `reference` accuracies if given."""
    accuracy, ci95 = mean_ci95(accuracies)
    diff = diff_ci = None
    if reference is not None:
        diff, diff_ci = mean_ci95(np.asarray(accuracies) - np.asarray(reference))
    return MethodResult(method, ways, shots, len(accuracies), accuracy, ci95, diff, diff_ci)


def markdown_table(rows: list[dict]) -> str:
    """The one table writer: every key of any row is a column (in order of first appearance), a row without
    it leaves the cell empty; floats as 4 significant digits (no decimals from 1000 on), strings as they are."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda value: (f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}") if isinstance(value, float) else "" if value is None else str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def results_table(results: list[MethodResult], reference: str | dict[int, str], validation: dict | None = None) -> str:
    """Markdown table of results, one row each, with the paired difference against `reference`: one method's
    name, or per shot count the method each row of that shot count is paired against (named in a column).
    `validation` adds a column of validation accuracies by (method, shots), where the row was chosen."""
    per_shot = isinstance(reference, dict)
    against = "the rival named" if per_shot else reference
    rows = []
    for r in results:
        row = {"method": r.method, "ways": str(r.ways), "shots": str(r.shots), "episodes": str(r.episodes)}
        if validation:
            value = validation.get((r.method, r.shots))
            row["validation (%)"] = "" if value is None else f"{100 * value:.2f}"
        row["accuracy (%)"] = f"{100 * r.accuracy:.2f} +- {100 * r.ci95:.2f}"
        row[f"paired diff vs {against} (points)"] = "" if r.paired_diff is None else f"{100 * r.paired_diff:+.2f} +- {100 * r.paired_ci95:.2f}"
        if per_shot:
            row["rival"] = reference.get(r.shots) or ""
        rows.append(row)
    return markdown_table(rows)


@jax.jit
def episode_accuracies(weights, query_features, query_labels, scale: float = 10.0):
    """Per-episode query accuracy of cosine classifiers: `(E, ways, d)` -> `(E,)`."""
    logits = jax.vmap(lambda w, q: base_learner.cosine_logits(w, q, scale))(weights, query_features)
    return jnp.mean(jnp.argmax(logits, axis=-1) == query_labels, axis=-1)


def prototype_weights(support_features, support_labels, ways: int):
    """The prototype classifier's weights (Meta-Baseline style): `(E, ways, d)`."""
    return jax.vmap(lambda f, y: base_learner.prototypes(f, y, ways))(jnp.asarray(support_features), jnp.asarray(support_labels))


def prototype_accuracies(episodes: FeatureEpisodes, ways: int, scale: float = 10.0) -> np.ndarray:
    """Per-episode query accuracy of the prototype classifier (cosine, W = support prototypes): `(E,)`."""
    weights = prototype_weights(episodes.support_features, episodes.support_labels, ways)
    return np.asarray(episode_accuracies(weights, episodes.query_features, episodes.query_labels, scale))


def make_evaluator(sample_task, ways: int, dim: int | None = None, scale: float = 10.0, chunk: int = 600, mesh=None):
    """Returns evaluate(params, episodes, rng) -> (per-episode accuracies `(E,)`, accuracy per step `(S,)`).

    `sample_task(params, support_features, support_labels, rng, ways, observe)` is any per-task weight
    function with the sampler's signature: MetaDiff's (`sampler.make_sample_task`), the one-step regressor's
    (`regressor.make_predict_task`), or a user's. It is vmapped over up to `chunk` episodes at a time and
    jitted once; the accuracy along the reverse process is observed inside the loop (one number per step,
    not the weights). `dim` (the denoiser's feature dim) is checked against the episodes' features. With a
    `mesh` (metadiff_jax.parallel), each chunk's episodes are sharded across its devices; an episode's key
    depends on its index only, so the accuracies do not depend on the device count.
    """

    def run(params, support_features, support_labels, query_features, query_labels, episode_ids, rng):
        def sample_one(f, y, qf, ql, key):
            observe = lambda w: base_learner.accuracy(base_learner.cosine_logits(w, qf, scale), ql)
            weights, per_step = sample_task(params, f, y, key, ways, observe)
            return base_learner.accuracy(base_learner.cosine_logits(weights, qf, scale), ql), per_step

        return jax.vmap(sample_one)(support_features, support_labels, query_features, query_labels, keys.episode_keys(rng, episode_ids))

    # With a mesh the results come back replicated, so that every process of a multi-host run can read them.
    run = jax.jit(run) if mesh is None else jax.jit(run, out_shardings=parallel.replicated(mesh))

    def evaluate(params, episodes: FeatureEpisodes, rng):
        check_episodes(episodes, ways, dim)
        accuracies, per_step = [], []
        total = len(episodes.support_features)
        for start in range(0, total, chunk):
            part = slice(start, min(start + chunk, total))
            arrays = (
                np.asarray(episodes.support_features[part], np.float32),
                np.asarray(episodes.support_labels[part], np.int32),
                np.asarray(episodes.query_features[part], np.float32),
                np.asarray(episodes.query_labels[part], np.int32),
                np.arange(part.start, part.stop),
            )
            count = len(arrays[0])
            chunk_params = params
            if mesh is not None:
                arrays, count = parallel.pad_to_multiple(arrays, mesh.size)
                arrays = parallel.put_sharded(arrays, mesh)
                chunk_params = parallel.put_replicated(params, mesh)
            acc, steps = run(chunk_params, *arrays, rng)
            accuracies.append(parallel.host_value(acc)[:count])
            per_step.append(parallel.host_value(steps)[:count])
        per_step = np.concatenate(per_step)
        return np.concatenate(accuracies), per_step.mean(axis=0)

    return evaluate


def image_episode_accuracies(query_accuracy, state, episodes: episodes_lib.Episodes, progress: bool = True, mesh=None) -> np.ndarray:
    """Per-episode query accuracy of an image-episode learner (`query_accuracy(state, support_x, support_y,
    query_x, query_y)`, e.g. a baseline's), one jitted call an episode: each episode adapts its own network,
    and XLA on CPU runs the inner loop's convolution gradients ~6x slower inside lax.map's while loop.

    With a `mesh` of several devices, each call takes one episode per device (shard_map): the same
    per-episode program on every device, so the accuracies do not depend on the device count.
    """
    arrays = [np.asarray(a) for a in episodes]
    total = len(arrays[0])
    if mesh is None or mesh.size == 1:
        accuracy = jax.jit(query_accuracy)
        episode_range = tqdm.trange(total, desc="evaluating", unit="episode", leave=False, disable=not progress)
        return np.array([float(accuracy(state, *(a[i] for a in arrays))) for i in episode_range])
    def one_each(state, *episode):
        # Each device's own copy of the state: an inner loop's gradient is then its episode's alone, where
        # JAX's transpose of a replicated input would sum it over the devices.
        state = jax.lax.pcast(state, parallel.DATA_AXIS, to="varying")
        return query_accuracy(state, *(a[0] for a in episode))[None]

    specs = (PartitionSpec(),) + (PartitionSpec(parallel.DATA_AXIS),) * len(arrays)
    per_device = jax.shard_map(one_each, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(parallel.DATA_AXIS))
    accuracy = jax.jit(per_device, out_shardings=parallel.replicated(mesh))
    state = parallel.put_replicated(state, mesh)
    arrays, _ = parallel.pad_to_multiple(tuple(arrays), mesh.size)
    accuracies = []
    for start in tqdm.trange(0, total, mesh.size, desc="evaluating", unit="group", leave=False, disable=not progress):
        group = parallel.put_sharded(tuple(a[start : start + mesh.size] for a in arrays), mesh)
        accuracies.append(parallel.host_value(accuracy(state, *group)))
    return np.concatenate(accuracies)[:total]
