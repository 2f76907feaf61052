"""The MetaDiff outer loop over a class-indexed feature split: episodes in, a trained TrainState out."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import tqdm

from metadiff_jax import diffusion, parallel
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


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


def training_batches(
    split: ClassIndexedSplit,
    targets: np.ndarray,
    spec: episodes_lib.EpisodeSpec,
    batch_size: int,
    seed: int,
    first_batch: int = 0,
    shard_index: int = 0,
    shard_count: int = 1,
):
    """Endless TrainBatch stream of feature episodes; W0 of an episode is its classes' rows of `targets`.

    Global batch b holds episodes b * batch_size ... (b + 1) * batch_size - 1; with several hosts, host
    `shard_index` of `shard_count` yields only its contiguous slice, so hosts never sample the same episode.
    """
    if batch_size % shard_count:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the shard count {shard_count}.")
    local = batch_size // shard_count
    labels = np.broadcast_to(np.repeat(np.arange(spec.ways, dtype=np.int32), spec.shots), (local, spec.ways * spec.shots))
    batch = first_batch
    while True:
        start = batch * batch_size + shard_index * local
        plan = episodes_lib.sample_plan(split, spec, seed, np.arange(start, start + local))
        yield diffusion.TrainBatch(split.images[plan.support_indices], labels, targets[plan.classes])
        batch += 1


def train_denoiser(
    denoiser, schedule, params, split: ClassIndexedSplit, spec: episodes_lib.EpisodeSpec, config: TrainConfig, progress: bool = True, mesh=None
):
    """Meta-trains `denoiser` on episodes of `split` (features grouped by class) with class-mean targets.

    With a `mesh` (metadiff_jax.parallel) the outer step is data-parallel: parameters replicated, each
    global batch's episodes sharded over the devices, each process sampling only its own slice of them.
    Returns (final TrainState, losses per step as a numpy array). Raises diffusion.TrainingDiverged, naming
    the step, if a loss or gradient becomes NaN or Inf; the state is then the last good one.
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
    state = diffusion.init_state(params, optimizer)
    train_step = diffusion.make_train_step(denoiser, schedule, optimizer, config.ema_decay, config.ema_start)
    if mesh is None:
        step_fn, place, shard_index, shard_count = diffusion.jit_train_step(train_step), (lambda batch: batch), 0, 1
    else:
        parallel.check_divisible(config.batch_size, mesh, "episodes per step (metadiff.batch_size)")
        step_fn, place = parallel.data_parallel_step(train_step, mesh), (lambda batch: parallel.global_batch(batch, mesh))
        shard_index, shard_count = jax.process_index(), jax.process_count()
        state = parallel.put_replicated(state, mesh)
    # Fake CPU devices outnumbering the cores can deadlock an all-reduce with several steps in flight.
    wait_each_step = mesh is not None and mesh.size > jax.process_count() and mesh.devices.flat[0].platform == "cpu"
    rng = jax.random.PRNGKey(config.seed)
    batches = episodes_lib.prefetch(training_batches(split, targets, spec, config.batch_size, config.seed, shard_index=shard_index, shard_count=shard_count))
    losses = []
    with tqdm.trange(config.steps, desc="Meta-training", unit="step", disable=not progress) as bar:
        for step in bar:
            state, metrics = step_fn(state, place(next(batches)), rng)
            losses.append(metrics["loss"])
            if wait_each_step:
                jax.block_until_ready(state)
            if (step + 1) % config.check_every == 0 or step + 1 == config.steps:
                diffusion.raise_if_diverged(state, metrics)
                bar.set_postfix(loss=f"{float(parallel.host_value(metrics['loss'])):.4f}")
    return state, np.array([parallel.host_value(loss) for loss in losses], np.float32)
