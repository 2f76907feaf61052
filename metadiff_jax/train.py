"""The MetaDiff outer loop over a class-indexed feature split: episodes in, a trained TrainState out.

With a CheckpointPolicy the loop saves its whole state (parameters, EMA, optimizer state, step, rng, the
position in the episode stream, the losses so far) every `every` steps through an orbax CheckpointManager
(asynchronous on one host), with the policy's metadata (config, dataset and feature versions) beside it; resumes
from the latest checkpoint exactly (the episode stream and the step's randomness are functions of the step
number) after checking that metadata; keeps the EMA parameters with the best validation accuracy in
`<directory>_best` when given a `validate` function; and stops on request (`should_stop`, e.g. after
SIGTERM) with a checkpoint of the step it reached.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Callable, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from metadiff_jax import differentiable, diffusion, parallel
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


# What the denoiser learns to reach (TrainConfig.targets).
TARGETS = ("class_means", "finetuned_prototypes")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    batch_size: int = 8  # episodes per outer step (the reference's 8)
    learning_rate: float = 1e-4
    weight_decay: float = 5e-4
    ema_decay: float = 0.9999
    ema_start: int = 2000
    check_every: int = 100  # steps between host-side checks for divergence (each check syncs)
    seed: int = 0
    # The query-loss training mode (differentiable.py): weight 0 is MetaDiff as published.
    query_loss_weight: float = 0.0
    query_loss: differentiable.QueryLossConfig = differentiable.QueryLossConfig()
    # W0: "class_means" (the reference: mean feature of each class over all its images) or
    # "finetuned_prototypes" (ProtoDiff: prototypes fine-tuned on each episode's labelled support and queries).
    targets: str = "class_means"
    finetune_steps: int = 10
    finetune_learning_rate: float = 0.5


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    directory: str  # absolute path of the CheckpointManager's folder
    every: int = 1000  # steps between saves
    keep: int = 3  # most recent checkpoints kept
    metadata: dict | None = None  # what the checkpoints were made from; a resume with other metadata is refused


class Preempted(Exception):
    """Training stopped on request after saving a checkpoint of the step it reached."""

    def __init__(self, step: int, directory: str | None):
        self.step, self.directory = step, directory
        super().__init__(f"stopped at step {step}" + (f"; checkpoint saved in {directory}" if directory else ""))


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: damaged, or made for another configuration."""


# Entries sized by the run's length: a run resumed with more steps than it was started with keeps them.
GROWABLE = ("losses",)


def _leaf_shapes(tree) -> dict[str, tuple]:
    # Path names without their container type: orbax stores NamedTuples (the train and optimizer states) as dicts.
    return {jax.tree_util.keystr(path, simple=True, separator="/"): (tuple(leaf.shape), np.dtype(leaf.dtype)) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _host_copy(tree):
    # Copies, not views: the jitted step donates the state's buffers while an asynchronous save still reads them.
    return jax.tree_util.tree_map(lambda leaf: np.array(parallel.host_value(leaf), copy=True), tree)


def save_record(manager: ocp.CheckpointManager, step: int, record: dict, metrics: dict | None = None) -> None:
    manager.save(step, args=ocp.args.Composite(record=ocp.args.StandardSave(_host_copy(record))), metrics=metrics)


def checkpoint_manager(directory: str, metadata: dict | None = None, **options) -> ocp.CheckpointManager:
    """A manager of "record" items, asynchronous on one host. `metadata` is stored with a new directory only:
    an existing one keeps what it was made with, which check_metadata compares.

    With several processes, saves are synchronous: orbax's barriers are device all-reduces
    (multihost_utils.sync_global_devices), and one issued from its background thread can interleave with
    the training step's all-reduce in a different order on each host, which deadlocks (seen with gloo:
    two processes hung in 2 of 5 runs).
    """
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=jax.process_count() == 1, **options),
        item_handlers={"record": ocp.StandardCheckpointHandler()},
        metadata=metadata,
    )


def check_metadata(manager: ocp.CheckpointManager, expected: dict | None) -> None:
    """Refuses to resume from checkpoints made from another config, dataset or feature cache."""
    if expected is None or manager.latest_step() is None:
        return
    saved = manager.metadata().custom_metadata or {}
    expected = json.loads(json.dumps(expected))  # tuples become lists, as they were stored
    differing = sorted(key for key in set(saved) | set(expected) if saved.get(key) != expected.get(key))
    if differing:
        raise CheckpointError(
            f"checkpoints in {manager.directory} were made from another {', '.join(differing)} than this run's; "
            "resuming from them would silently change the run. Use a new workdir, or delete that folder to start this stage over."
        )


def restore_latest(manager: ocp.CheckpointManager, template: dict):
    """(record, step) from the latest checkpoint, checked leaf by leaf against `template`; None if none.

    orbax would restore a (3, 4) array into a (3, 5) target without complaint, so shapes are compared first.
    """
    step = manager.latest_step()
    if step is None:
        return None
    where = f"{manager.directory}/{step}"
    try:
        saved = _leaf_shapes(manager.item_metadata(step)["record"].tree)
    except Exception as error:  # orbax raises many types for unreadable metadata
        raise CheckpointError(f"checkpoint {where} cannot be read ({type(error).__name__}: {error}). It is damaged: delete {where} to resume from the checkpoint before it.") from error
    expected = _leaf_shapes(template)
    growable = {name for name in expected if name.endswith(GROWABLE)}
    if saved.keys() != expected.keys():
        differing = sorted(saved.keys() ^ expected.keys())[:3]
        raise CheckpointError(f"checkpoint {where} holds another model (entries {', '.join(differing)} differ); it was made with another config. Use a new workdir.")
    for name, (shape, dtype) in expected.items():
        if (saved[name][0] != shape and name not in growable) or saved[name][1] != dtype:
            raise CheckpointError(
                f"checkpoint {where} holds {name} of shape {saved[name][0]} and dtype {saved[name][1]}, but this config needs "
                f"{shape} {dtype}; it was made with another config. Use a new workdir."
            )
    shapes = {name: saved[name][0] if name in growable else shape for name, (shape, _) in expected.items()}
    target = jax.tree_util.tree_map_with_path(
        lambda path, leaf: np.zeros(shapes[jax.tree_util.keystr(path, simple=True, separator="/")], leaf.dtype), template
    )
    try:
        restored = manager.restore(step, args=ocp.args.Composite(record=ocp.args.StandardRestore(target)))["record"]
    except Exception as error:
        raise CheckpointError(f"checkpoint {where} cannot be read ({type(error).__name__}: {error}). It is damaged: delete {where} to resume from the checkpoint before it.") from error
    return restored, step


def training_batches(
    split: ClassIndexedSplit,
    targets: np.ndarray,
    spec: episodes_lib.EpisodeSpec,
    batch_size: int,
    seed: int,
    first_batch: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
    with_queries: bool = False,
):
    """Endless TrainBatch stream of feature episodes; W0 of an episode is its classes' rows of `targets`.

    Global batch b holds episodes b * batch_size ... (b + 1) * batch_size - 1; with several hosts, host
    `shard_index` of `shard_count` yields only its contiguous slice, so hosts never sample the same episode.
    `with_queries` adds the episodes' query features and labels (for the query-loss training mode).
    """
    if batch_size % shard_count:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the shard count {shard_count}.")
    local = batch_size // shard_count
    labels = lambda n: np.broadcast_to(np.repeat(np.arange(spec.ways, dtype=np.int32), n), (local, spec.ways * n))
    batch = first_batch
    while True:
        start = batch * batch_size + shard_index * local
        plan = episodes_lib.sample_plan(split, spec, seed, np.arange(start, start + local))
        queries = (split.images[plan.query_indices], labels(spec.queries)) if with_queries else (None, None)
        yield diffusion.TrainBatch(split.images[plan.support_indices], labels(spec.shots), targets[plan.classes], *queries)
        batch += 1


def train_denoiser(
    denoiser,
    schedule,
    params,
    split: ClassIndexedSplit,
    spec: episodes_lib.EpisodeSpec,
    config: TrainConfig,
    progress: bool = True,
    mesh=None,
    checkpoints: CheckpointPolicy | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate: Callable[[object, int], float] | None = None,
):
    """Meta-trains `denoiser` on episodes of `split` (features grouped by class) with class-mean targets.

    With a `mesh` (metadiff_jax.parallel) the outer step is data-parallel: parameters replicated, each
    global batch's episodes sharded over the devices, each process sampling only its own slice of them.
    With `checkpoints`, resumes from the latest checkpoint there and saves every `checkpoints.every` steps;
    `should_stop()` true makes it save and raise Preempted; `validate(ema_params, step)`, called at each save,
    picks the checkpoint kept in `<directory>_best`. Returns (final TrainState, losses per step as a
    numpy array). Raises diffusion.TrainingDiverged, naming the step, if a loss or gradient becomes NaN or
    Inf; the state is then the last good one, and no checkpoint of a diverged state is written.
    """
    features = np.asarray(split.images)
    if features.ndim != 2 or features.shape[1] != denoiser.dim:
        raise ValueError(
            f"{split.identity}: features of shape {features.shape[1:]} do not fit a denoiser of dim {denoiser.dim}; "
            f"build the denoiser with dim={features.shape[-1]} or pass (num_images, {denoiser.dim}) features."
        )
    if not np.all(np.isfinite(features)):
        first = int(np.argwhere(~np.isfinite(features))[0][0])
        raise ValueError(f"{split.identity}: feature row {first} holds NaN or Inf; fix the feature extractor or cache.")
    episodes_lib.check_spec(split, spec)
    targets = diffusion.class_mean_targets(features, split.class_starts)
    optimizer = diffusion.make_optimizer(config.learning_rate, config.weight_decay)
    query_loss = differentiable.make_query_loss(denoiser, schedule, config.query_loss) if config.query_loss_weight else None
    if config.targets not in TARGETS:
        raise ValueError(f"Unknown targets {config.targets!r}; known: {', '.join(TARGETS)}.")
    finetuned = config.targets == "finetuned_prototypes"
    train_step = diffusion.make_train_step(
        denoiser, schedule, optimizer, config.ema_decay, config.ema_start, query_loss, config.query_loss_weight,
        functools.partial(diffusion.finetuned_prototype_targets, steps=config.finetune_steps, learning_rate=config.finetune_learning_rate) if finetuned else None,
    )
    if mesh is None:
        step_fn, place, shard_index, shard_count = diffusion.jit_train_step(train_step), (lambda batch: batch), 0, 1
    else:
        parallel.check_divisible(config.batch_size, mesh, "episodes per step (metadiff.batch_size)")
        step_fn, place = parallel.data_parallel_step(train_step, mesh), (lambda batch: parallel.global_batch(batch, mesh))
        shard_index, shard_count = jax.process_index(), jax.process_count()

    def batches_from(first_step: int):
        stream = training_batches(
            split, targets, spec, config.batch_size, config.seed, first_step, shard_index, shard_count, with_queries=query_loss is not None or finetuned
        )
        return map(place, episodes_lib.prefetch(stream))

    return checkpointed_loop(
        step_fn,
        diffusion.init_state(params, optimizer),
        batches_from,
        config.steps,
        jax.random.PRNGKey(config.seed),
        check=diffusion.raise_if_diverged,
        check_every=config.check_every,
        checkpoints=checkpoints,
        should_stop=should_stop,
        validate=None if validate is None else (lambda state, step: validate(state.ema_params, step)),
        best_item=lambda state: {"ema_params": state.ema_params},
        place_state=(lambda state: state) if mesh is None else (lambda state: parallel.put_replicated(state, mesh)),
        # Fake CPU devices outnumbering the cores can deadlock an all-reduce with several steps in flight.
        wait_each_step=mesh is not None and mesh.size > jax.process_count() and mesh.devices.flat[0].platform == "cpu",
        progress=progress,
    )


def checkpointed_loop(
    step_fn,
    state,
    batches_from: Callable[[int], Iterator],
    steps: int,
    rng,
    *,
    check: Callable[[object, dict], None],
    check_every: int = 100,
    checkpoints: CheckpointPolicy | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate: Callable[[object, int], float] | None = None,
    best_item: Callable[[object], object] = lambda state: state,
    place_state: Callable[[object], object] = lambda state: state,
    wait_each_step: bool = False,
    progress: bool = True,
    description: str = "Meta-training",
):
    """The outer loop every meta-learner here shares: `state, metrics = step_fn(state, batch, rng)` for
    `steps` steps, with batches from `batches_from(first_step)` (a stream that is a function of the step
    number, so a resumed run continues it exactly) and `metrics["loss"]` recorded per step.

    `check(state, metrics)` raises if training diverged; it runs every `check_every` steps and before every
    save, so no checkpoint of a diverged state is written. With `checkpoints`, resumes from the latest
    checkpoint (its metadata and shapes checked first) and saves {state, rng, losses} every
    `checkpoints.every` steps; `validate(state, step)` at each save picks the `best_item(state)` kept in
    `<directory>_best`; `should_stop()` true saves and raises Preempted. `place_state` puts a restored or
    initial state where the step expects it (e.g. replicated over a mesh). Returns (state, losses).
    """
    losses = np.zeros(steps, np.float32)
    first_step, manager, best = 0, None, None
    if checkpoints is not None:
        manager = checkpoint_manager(checkpoints.directory, checkpoints.metadata, max_to_keep=checkpoints.keep)
        check_metadata(manager, checkpoints.metadata)
        if validate is not None:
            best = checkpoint_manager(checkpoints.directory + "_best", max_to_keep=1, best_fn=lambda metrics: metrics["validation_accuracy"], best_mode="max")
        restored = restore_latest(manager, {"state": state, "rng": rng, "losses": losses})
        if restored is not None:
            record, first_step = restored
            state, rng = jax.tree_util.tree_map(jax.numpy.asarray, (record["state"], record["rng"]))
            kept = min(steps, len(record["losses"]))
            losses[:kept] = record["losses"][:kept]
    state = place_state(state)
    batches = batches_from(first_step)
    pending = []  # this run's losses not yet copied into `losses`: reading them every step would sync

    def flush() -> None:
        for index, loss in pending:
            losses[index] = parallel.host_value(loss)
        pending.clear()

    with tqdm.trange(first_step, steps, initial=first_step, total=steps, desc=description, unit="step", disable=not progress) as bar:
        for step in bar:
            state, metrics = step_fn(state, next(batches), rng)
            pending.append((step, metrics["loss"]))
            if wait_each_step:
                jax.block_until_ready(state)
            done = step + 1
            stop = should_stop is not None and should_stop()
            save = manager is not None and (stop or done % checkpoints.every == 0)
            if save or done % check_every == 0 or done == steps:
                check(state, metrics)
                bar.set_postfix(loss=f"{float(parallel.host_value(metrics['loss'])):.4f}")
            if save:
                flush()
                save_record(manager, done, {"state": state, "rng": rng, "losses": losses})
                if best is not None:
                    accuracy = float(validate(state, done))
                    save_record(best, done, best_item(state), {"validation_accuracy": accuracy})
                    bar.set_postfix(loss=f"{losses[step]:.4f}", validation=f"{accuracy:.4f}")
            if stop:
                for open_manager in (manager, best):
                    if open_manager is not None:
                        open_manager.wait_until_finished()
                raise Preempted(done, checkpoints.directory if checkpoints else None)
    flush()
    for open_manager in (manager, best):
        if open_manager is not None:
            open_manager.wait_until_finished()
            open_manager.close()
    return state, losses
