"""N-way K-shot Q-query episodes over a class-indexed split, seeded per episode.

Episode e of a stream with seed s depends on (s, e) alone: its generator is Philox keyed by (s, e). So the
same seed gives the same episodes on any machine, for any batch size, device count or host count; a
host or device takes the episode numbers it owns and nothing else changes. Sampling is split in two:
an index plan (which classes, which images: small integers, cheap to save beside results) and a gather
of the images it names.

Layout, per episode: support images are class-major (`ways * shots`: class 0's shots, then class 1's, ...),
queries likewise; labels are 0..ways-1 in that order, and which class gets label k is random.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import queue
import threading
from typing import Iterator, NamedTuple

import numpy as np

from metadiff_jax.data.split import ClassIndexedSplit


class EpisodeError(ValueError):
    """Episodes that a split cannot supply, or a saved plan that does not match; says how to fix it."""


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    ways: int
    shots: int
    queries: int

    def __post_init__(self):
        for field in ("ways", "shots", "queries"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise EpisodeError(f"{field} must be a positive integer, got {value!r}.")


class EpisodePlan(NamedTuple):
    """Which images make each episode, as indices into a ClassIndexedSplit's images.

    classes: int32 `(episodes, ways)`, the split's class index behind label k.
    support_indices: int64 `(episodes, ways * shots)`; query_indices: int64 `(episodes, ways * queries)`.
    """

    classes: np.ndarray
    support_indices: np.ndarray
    query_indices: np.ndarray


class Episodes(NamedTuple):
    """A batch of episodes (a pytree: vmap over the leading axis).

    support_images: uint8 `(episodes, ways * shots, H, W, C)`; support_labels: int32 `(episodes, ways * shots)`;
    query_images: uint8 `(episodes, ways * queries, H, W, C)`; query_labels: int32 `(episodes, ways * queries)`.
    """

    support_images: np.ndarray
    support_labels: np.ndarray
    query_images: np.ndarray
    query_labels: np.ndarray


def check_spec(split: ClassIndexedSplit, spec: EpisodeSpec) -> None:
    """Raises EpisodeError, with the fix, when `split` cannot supply `spec` episodes."""
    if spec.ways > split.num_classes:
        raise EpisodeError(
            f"{spec.ways}-way episodes need {spec.ways} classes, but {split.identity} has only {split.num_classes}. "
            f"Use at most {split.num_classes} ways, or a split or dataset config with more classes."
        )
    smallest = int(split.class_sizes.min())
    if spec.shots + spec.queries > smallest:
        small_class = int(split.class_sizes.argmin())
        raise EpisodeError(
            f"shots + queries = {spec.shots} + {spec.queries} = {spec.shots + spec.queries} images per class, but class "
            f"{small_class} of {split.identity} has only {smallest}. Lower shots or queries so that they add up to at "
            f"most {smallest}."
        )


def episode_rng(seed: int, episode: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=np.array([seed, episode], dtype=np.uint64)))


PLAN_CHUNK = 1024


def sample_plan(split: ClassIndexedSplit, spec: EpisodeSpec, seed: int, episode_ids) -> EpisodePlan:
    """The index plan of episodes `episode_ids` (any integers >= 0) of the stream with `seed`."""
    check_spec(split, spec)
    episode_ids = np.asarray(episode_ids, dtype=np.int64).reshape(-1)
    if np.any(episode_ids < 0):
        raise EpisodeError("episode ids must be non-negative.")
    if len(episode_ids) > PLAN_CHUNK:  # the keys below take episodes x ways x largest class floats
        plans = [sample_plan(split, spec, seed, episode_ids[i : i + PLAN_CHUNK]) for i in range(0, len(episode_ids), PLAN_CHUNK)]
        return EpisodePlan(*(np.concatenate(parts) for parts in zip(*plans)))
    per_class = spec.shots + spec.queries
    sizes, starts = split.class_sizes, split.class_starts
    slots = np.arange(int(sizes.max()))
    classes = np.empty((len(episode_ids), spec.ways), np.int32)
    # One random key per (class, image slot); slots past a class's size sort last. Ranking the keys draws
    # every class's images without replacement at once; each episode draws its keys from its own generator.
    keys = np.full((len(episode_ids), spec.ways, len(slots)), 2.0)
    for row, episode in enumerate(episode_ids):
        rng = episode_rng(seed, int(episode))
        chosen = rng.choice(split.num_classes, spec.ways, replace=False)
        classes[row] = chosen
        keys[row, :, : sizes[chosen].max()] = rng.random((spec.ways, sizes[chosen].max()))
    keys[slots >= sizes[classes][..., None]] = 2.0
    # The per_class smallest keys in ascending order (argsort's first per_class columns: the keys are
    # distinct), by a partition and a sort of those few instead of sorting every key.
    smallest = np.argpartition(keys, per_class - 1, axis=-1)[..., :per_class]
    picks = starts[classes][..., None] + np.take_along_axis(smallest, np.argsort(np.take_along_axis(keys, smallest, -1), axis=-1), -1)
    support = picks[:, :, : spec.shots].reshape(len(episode_ids), spec.ways * spec.shots)
    query = picks[:, :, spec.shots :].reshape(len(episode_ids), spec.ways * spec.queries)
    return EpisodePlan(classes=classes, support_indices=support, query_indices=query)


def gather(split: ClassIndexedSplit, plan: EpisodePlan) -> Episodes:
    """The images and labels a plan names."""
    episodes, ways = plan.classes.shape
    shots = plan.support_indices.shape[1] // ways
    queries = plan.query_indices.shape[1] // ways
    labels = lambda n: np.broadcast_to(np.repeat(np.arange(ways, dtype=np.int32), n), (episodes, ways * n))
    return Episodes(
        support_images=split.images[plan.support_indices],
        support_labels=np.array(labels(shots)),
        query_images=split.images[plan.query_indices],
        query_labels=np.array(labels(queries)),
    )


def sample_episodes(split: ClassIndexedSplit, spec: EpisodeSpec, seed: int, episode_ids) -> Episodes:
    return gather(split, sample_plan(split, spec, seed, episode_ids))


def episode_batches(
    split: ClassIndexedSplit,
    spec: EpisodeSpec,
    seed: int,
    batch_size: int,
    first_batch: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
) -> Iterator[Episodes]:
    """Endless batches: batch b holds episodes b * batch_size ... (b + 1) * batch_size - 1.

    With `shard_count` hosts, host `shard_index` yields only its contiguous slice of each global batch, so
    the hosts together see exactly the episodes one host would. `first_batch` resumes a stream.
    """
    if batch_size % shard_count:
        raise EpisodeError(f"batch_size {batch_size} must be a multiple of the shard count {shard_count}.")
    local = batch_size // shard_count
    batch = first_batch
    while True:
        start = batch * batch_size + shard_index * local
        yield sample_episodes(split, spec, seed, np.arange(start, start + local))
        batch += 1


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Runs `iterator` in a background thread, `size` items ahead, so sampling overlaps the train step."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def produce():
        try:
            for item in iterator:
                buffer.put(item)
        except BaseException as error:  # Re-raised in the consumer, where it can be seen.
            buffer.put(error)
        buffer.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = buffer.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def plan_hash(plan: EpisodePlan) -> str:
    """sha256 of a plan's indices: names a list of test episodes in results."""
    digest = hashlib.sha256()
    for array in plan:
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


def save_plan(path: str | pathlib.Path, plan: EpisodePlan, split: ClassIndexedSplit, spec: EpisodeSpec, seed: int) -> str:
    """Saves a fixed list of episodes (indices, not images) beside results; returns its hash."""
    meta = {"identity": split.identity, "spec": dataclasses.asdict(spec), "seed": seed, "sha256": plan_hash(plan)}
    with open(path, "wb") as file:
        np.savez(file, meta=np.array(json.dumps(meta)), **plan._asdict())
    return meta["sha256"]


def load_plan(path: str | pathlib.Path, split: ClassIndexedSplit) -> tuple[EpisodePlan, EpisodeSpec, int]:
    """Reloads a saved list of episodes for `split`; refuses a list made for other data or a damaged file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise EpisodeError(f"No saved episodes at {path}.")
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            plan = EpisodePlan(*(np.array(data[name]) for name in EpisodePlan._fields))
    except (OSError, ValueError, KeyError) as error:
        raise EpisodeError(f"{path} is not a readable episode list ({error}); delete it to sample a new one.") from error
    if meta["identity"] != split.identity:
        raise EpisodeError(
            f"{path} lists episodes of {meta['identity']}, not of {split.identity}: evaluate on the data it was "
            "made for, or delete it to sample new episodes."
        )
    if plan_hash(plan) != meta["sha256"]:
        raise EpisodeError(f"{path} is damaged: its indices do not match their recorded hash. Delete it to sample anew.")
    if int(plan.support_indices.max(initial=0)) >= len(split.images) or int(plan.query_indices.max(initial=0)) >= len(split.images):
        raise EpisodeError(f"{path} names images beyond the {len(split.images)} of {split.identity}.")
    return plan, EpisodeSpec(**meta["spec"]), int(meta["seed"])
