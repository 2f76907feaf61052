"""MetaDiff's meta-training over a class-indexed feature split: its settings, its episode stream, its setup.

`train_denoiser` builds the training loss from the settings (`training_loss`: an objective of OBJECTIVES,
targets of TARGETS, and the query loss when its weight is not 0), the outer step around it
(diffusion.make_train_step), the stream of training episodes with their targets, and hands both to the
checkpointed loop that the baselines share (metadiff_jax.loop).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from metadiff_jax import checkpoints as checkpoints_lib
from metadiff_jax import config_dict, diffusion, feature_splits, loop, parallel, regressor
from metadiff_jax import query_loss as query_loss_lib
from metadiff_jax import sampler as sampler_lib
from metadiff_jax.config_dict import FieldError
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


class Objective(NamedTuple):
    """What a denoiser is trained to do: its loss, loss(denoiser, schedule) -> diffusion.LossFn, and how the
    trained denoiser is read, reader(denoiser, schedule, sampler.SamplerConfig) -> a per-task weight function
    with the sampler's signature (what evaluate.make_evaluator takes)."""

    loss: Callable
    reader: Callable


# TrainConfig.objective: "diffusion" is MetaDiff, read by a sampler; "regression" maps the support set to the
# targets in one forward pass (the one-step regressor, a baseline: no diffusion).
OBJECTIVES: dict[str, Objective] = {
    "diffusion": Objective(diffusion.make_loss, sampler_lib.make_sample_task),
    "regression": Objective(regressor.make_loss, lambda denoiser, schedule, sampler_config: regressor.make_predict_task(denoiser, schedule)),
}


def finetuned_prototypes(config: TrainConfig):
    return functools.partial(diffusion.finetuned_prototype_targets, steps=config.finetune_steps, learning_rate=config.finetune_learning_rate)


# What the denoiser learns to reach (TrainConfig.targets): name -> (settings -> a function of the batch that
# replaces its targets, or None to keep the batch's rows of the class-mean table).
TARGETS: dict[str, Callable] = {"class_means": lambda config: None, "finetuned_prototypes": finetuned_prototypes}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """MetaDiff's meta-training settings. These defaults are the project's defaults (configs/default.py reads
    them from here); configs/paper.py sets the reference's values where they differ."""

    steps: int = 20_000  # outer steps; 0 keeps the untrained denoiser (an ablation)
    batch_size: int = 8  # episodes per outer step (the reference's 8)
    learning_rate: float = 1e-4
    weight_decay: float = 5e-4
    # The reference's 0.9999 from step 2,000 averages over most of a 20,000-step run.
    ema_decay: float = 0.999
    ema_start: int = 200  # steps before the EMA starts averaging (a plain copy until then)
    check_every: int = 100  # steps between host-side checks for divergence (each check syncs)
    # Stop once this many validations in a row (one per checkpoint) have not beaten the best, and test the
    # best; None trains every step (and the config's metadiff.evaluate says which parameters are tested).
    patience: int | None = None
    seed: int = 0
    # W0: "class_means" (the reference: mean feature of each class over all its images) or
    # "finetuned_prototypes" (ProtoDiff: prototypes fine-tuned on each episode's labelled support and queries).
    targets: str = "class_means"
    finetune_steps: int = 10  # finetuned_prototypes only: gradient steps on the labelled episode
    finetune_learning_rate: float = 0.5
    # "diffusion" (MetaDiff) or "regression": the same denoiser trained as a one-step regressor from the
    # support set to W0 (a baseline, read with regressor.make_predict_task).
    objective: str = "diffusion"
    # The query-loss training mode (query_loss.py); its weight 0 is MetaDiff as published.
    query_loss: query_loss_lib.QueryLossConfig = query_loss_lib.QueryLossConfig()

    def __post_init__(self):
        if self.steps < 0:
            raise FieldError("steps", f"must be 0 (keep the untrained denoiser) or more, got {self.steps}.")
        config_dict.check_counts(self, "batch_size", "check_every")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise FieldError("ema_decay", f"must be in [0, 1], got {self.ema_decay}.")
        if self.targets not in TARGETS:
            raise FieldError("targets", f"{self.targets!r} is unknown; known: {', '.join(TARGETS)}.")
        if self.objective not in OBJECTIVES:
            raise FieldError("objective", f"{self.objective!r} is unknown; known: {', '.join(OBJECTIVES)}.")
        if self.finetune_steps < 0:
            raise FieldError("finetune_steps", f"must be 0 or more, got {self.finetune_steps}.")
        if self.patience is not None and self.patience < 1:
            raise FieldError("patience", f"must be at least 1 (or unset: train every step), got {self.patience}.")


def training_loss(denoiser, schedule, config: TrainConfig) -> tuple[diffusion.LossFn, bool]:
    """The loss the settings ask for, and whether it needs each episode's query set."""
    loss_fn = OBJECTIVES[config.objective].loss(denoiser, schedule)
    targets_from_batch = TARGETS[config.targets](config)
    if targets_from_batch is not None:
        loss_fn = diffusion.with_targets(loss_fn, targets_from_batch)
    if config.query_loss.weight:
        query_loss = query_loss_lib.make_query_loss(denoiser, schedule, config.query_loss)
        loss_fn = query_loss_lib.add_query_loss(loss_fn, query_loss, config.query_loss.weight)
    return loss_fn, bool(config.query_loss.weight) or targets_from_batch is not None


def weights_reader(denoiser, schedule, config: TrainConfig, sampler_config: sampler_lib.SamplerConfig):
    """How a denoiser trained with these settings is read: a per-task weight function (sampler's signature)."""
    return OBJECTIVES[config.objective].reader(denoiser, schedule, sampler_config)


class TrainedDenoiser(NamedTuple):
    """A trained denoiser as the launch layer hands it on: the module, its noise schedule, the parameters to
    read it with, the per-step training losses, its per-task weight function, the steps it trained, its
    evaluator (evaluate.make_evaluator of that function: one compiled program for all episode sets of one
    size, the validation of checkpoints, the test and the choice on validation episodes alike), and the
    step whose parameters `params` are (the last, or the best on validation)."""

    denoiser: Any
    schedule: Any
    params: Any
    losses: np.ndarray
    sample_task: Callable
    steps: int
    evaluator: Callable
    tested_step: int


BLOCK_EPISODES = 128


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
    # Episodes are planned and gathered for BLOCK_EPISODES at a time, then handed out a batch at a time: the
    # same episodes as one batch at a time, with the host's per-call overhead paid once per block (the host's
    # share of a step otherwise exceeds a small denoiser's step).
    steps_per_block = max(1, BLOCK_EPISODES // local)
    batch = first_batch
    while True:
        steps = np.arange(batch, batch + steps_per_block)
        ids = (steps[:, None] * batch_size + shard_index * local + np.arange(local)).reshape(-1)
        plan = episodes_lib.sample_plan(split, spec, seed, ids)
        support, block_targets = split.images[plan.support_indices], targets[plan.classes]
        query = split.images[plan.query_indices] if with_queries else None
        for k in range(steps_per_block):
            rows = slice(k * local, (k + 1) * local)
            queries = (query[rows], labels(spec.queries)) if with_queries else (None, None)
            yield diffusion.TrainBatch(support[rows], labels(spec.shots), block_targets[rows], *queries)
        batch += steps_per_block


def train_denoiser(
    denoiser,
    schedule,
    params,
    split: ClassIndexedSplit,
    spec: episodes_lib.EpisodeSpec,
    config: TrainConfig,
    progress: bool = True,
    mesh=None,
    checkpoints: checkpoints_lib.CheckpointPolicy | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate: Callable[[object, int], float] | None = None,
    parallel_style: str = "jit",
):
    """Meta-trains `denoiser` on episodes of `split` (features grouped by class) with class-mean targets.

    With a `mesh` (metadiff_jax.parallel) the outer step is data-parallel: parameters replicated, each
    global batch's episodes sharded over the devices, each process sampling only its own slice of them;
    `parallel_style` is "jit" (one program, XLA partitions it) or "shard_map" (the per-device program with
    explicit lax.pmean), see parallel.data_parallel_step. With `checkpoints`, resumes from the latest
    checkpoint there and saves every `checkpoints.every` steps; `should_stop()` true makes it save and raise
    loop.Preempted; `validate(ema_params, step)`, called at each save, picks the checkpoint kept in
    `<directory>_best`. Returns (final TrainState, losses per step as a numpy array). Raises
    loop.TrainingDiverged, naming the step, if a loss or gradient becomes NaN or Inf; the state is then the
    last good one, and no checkpoint of a diverged state is written.
    """
    features = np.asarray(split.images)
    if features.ndim != 2:
        raise feature_splits.InputError(f"{split.identity}: features of shape {features.shape} are not (num_images, dim).")
    feature_splits.check_features(features, denoiser.dim, split.identity)
    episodes_lib.check_spec(split, spec)
    if mesh is not None:
        parallel.check_divisible(config.batch_size, mesh, "episodes per step (metadiff.batch_size)")
    config.query_loss.check(schedule)
    targets = diffusion.class_mean_targets(features, split.class_starts)
    optimizer = diffusion.make_optimizer(config.learning_rate, config.weight_decay)
    loss_fn, needs_queries = training_loss(denoiser, schedule, config)

    def make_step(axis_name=None):
        return diffusion.make_train_step(loss_fn, optimizer, ema_decay=config.ema_decay, ema_start=config.ema_start, axis_name=axis_name)

    if mesh is None:
        step_fn, place, shard_index, shard_count = diffusion.jit_train_step(make_step()), (lambda batch: batch), 0, 1
    else:
        step_fn, place = parallel.data_parallel_step(make_step, mesh, parallel_style), (lambda batch: parallel.global_batch(batch, mesh))
        shard_index, shard_count = jax.process_index(), jax.process_count()

    def batches_from(first_step: int):
        stream = training_batches(
            split, targets, spec, config.batch_size, config.seed, first_step, shard_index, shard_count, with_queries=needs_queries
        )
        return map(place, episodes_lib.prefetch(stream))

    return loop.checkpointed_loop(
        step_fn,
        diffusion.init_state(params, optimizer),
        batches_from,
        config.steps,
        jax.random.PRNGKey(config.seed),
        check=loop.raise_if_diverged,
        check_every=config.check_every,
        checkpoints=checkpoints,
        should_stop=should_stop,
        validate=None if validate is None else (lambda state, step: validate(state.ema_params, step)),
        best_item=lambda state: {"ema_params": state.ema_params},
        patience=config.patience,
        place_state=(lambda state: state) if mesh is None else (lambda state: parallel.put_replicated(state, mesh)),
        wait_each_step=parallel.fake_cpu_devices(mesh),
        progress=progress,
    )
