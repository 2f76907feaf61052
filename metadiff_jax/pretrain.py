"""Backbone pretraining on the base classes, and encoding images into features with the frozen backbone.

The reference recipe (MetaOptNet-style, docs/reference.md): cross-entropy with a linear head over
all base classes (optionally plus a 4-way rotation head), SGD with Nesterov momentum 0.9, weight decay 5e-4,
batch 128, learning rate 0.1 divided by 10 at 60 / 80 / 90 % of training. Augmentation runs on the device,
inside the jitted step: a random shift (pad and crop) and, for natural images, a horizontal flip.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from metadiff_jax import config_dict, evaluate, loop, parallel
from metadiff_jax.data import episodes as episodes_lib
from metadiff_jax.data.split import ClassIndexedSplit


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Defaults: the reference recipe shortened to 3 epochs for a CPU (configs/paper.py runs its 100): the default
    main job's 15-minute budget on 2 cores (docs/performance.md)."""

    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.6, 0.8, 0.9)  # fractions of training at which the rate drops 10x
    rotation: bool = False  # add the 4-way rotation head (its loss weighted like the class loss)
    shift: int = 2  # random shift in pixels (0: off)
    flip: bool = False  # horizontal flips: right for natural images, wrong for characters
    validation_episodes: int = 200  # 5-way 1-shot prototype episodes for model selection after each epoch
    seed: int = 0

    def __post_init__(self):
        config_dict.check_counts(self, "epochs", "batch_size")


class Classifier(nn.Module):
    """Backbone + linear class head (+ a 4-way rotation head)."""

    backbone: nn.Module
    num_classes: int
    rotation: bool = False

    @nn.compact
    def __call__(self, images, train: bool = False):
        features = self.backbone(images, train=train)
        logits = nn.Dense(self.num_classes, name="class_head")(features)
        rotation_logits = nn.Dense(4, name="rotation_head")(features) if self.rotation else None
        return features, logits, rotation_logits


class PretrainState(NamedTuple):
    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any


def augment(rng, images, shift: int, flip: bool):
    """Random shift by up to `shift` pixels (zero padding) and optional horizontal flip, per image."""
    if shift:
        padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        offsets = jax.random.randint(rng, (images.shape[0], 2), 0, 2 * shift + 1)
        crop = lambda image, offset: jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), images.shape[1:])
        images = jax.vmap(crop)(padded, offsets)
    if flip:
        mirrored = jax.random.bernoulli(jax.random.fold_in(rng, 1), 0.5, (images.shape[0], 1, 1, 1))
        images = jnp.where(mirrored, images[:, :, ::-1], images)
    return images


def rotate_batch(images, turns):
    """Rotates each image by turns * 90 degrees (square images)."""
    rotations = [lambda x, k=k: jnp.rot90(x, k, axes=(0, 1)) for k in range(4)]
    return jax.vmap(lambda image, k: jax.lax.switch(k, rotations, image))(images, turns)


def make_optimizer(config: PretrainConfig, steps: int) -> optax.GradientTransformation:
    boundaries = {int(fraction * steps): 0.1 for fraction in config.milestones}
    schedule = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optax.sgd(schedule, momentum=config.momentum, nesterov=True))


def make_train_step(model: Classifier, optimizer, config: PretrainConfig, mesh=None):
    """The jitted step(state, (images, labels), rng); with a `mesh`, data-parallel over it: the state
    replicated, the batch split over the devices (each process placing its own rows, parallel.global_batch)."""

    def loss_fn(params, batch_stats, images, labels, rng):
        augment_rng, turn_rng, drop_rng = jax.random.split(rng, 3)
        images = augment(augment_rng, images.astype(jnp.float32) / 255.0, config.shift, config.flip)
        variables = {"params": params, "batch_stats": batch_stats}
        if model.rotation:
            turns = jax.random.randint(turn_rng, (images.shape[0],), 0, 4)
            images = jnp.concatenate([images, rotate_batch(images, turns)])
        (_, logits, rotation_logits), updates = model.apply(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": drop_rng}
        )
        n = labels.shape[0]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits[:n], labels).mean()
        if model.rotation:
            loss = loss + optax.softmax_cross_entropy_with_integer_labels(rotation_logits[n:], turns).mean()
        accuracy = jnp.mean(jnp.argmax(logits[:n], -1) == labels)
        return loss, (updates["batch_stats"], accuracy)

    def train_step(state: PretrainState, batch, rng):
        images, labels = batch
        rng = jax.random.fold_in(rng, state.step)
        (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, images, labels, rng
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return PretrainState(state.step + 1, params, batch_stats, opt_state), {"loss": loss, "accuracy": accuracy}

    if mesh is None:
        return jax.jit(train_step, donate_argnums=0)
    # Written for the whole batch and partitioned by XLA: batch norm's statistics, the augmentation's random
    # draws and the loss are those of the global batch, so the step computes what one device would.
    return parallel.data_parallel_step(lambda axis_name: train_step, mesh, "jit")


def make_encoder(backbone: nn.Module, batch_size: int = 1024, mesh=None):
    """encode(variables, images uint8 `(N, H, W, C)`) -> float32 features `(N, dim)`, in batches.

    With a `mesh` each batch (rounded up to a multiple of the mesh's size) is split over its devices, each
    process reading only its own slice of the images; every process gets every feature back.
    """
    if mesh is None:
        forward = jax.jit(lambda variables, images: backbone.apply(variables, images, train=False))
    else:
        batch_size = -(-batch_size // mesh.size) * mesh.size
        forward = jax.jit(
            lambda variables, images: backbone.apply(variables, images, train=False),
            in_shardings=(parallel.replicated(mesh), parallel.sharded(mesh)),
            out_shardings=parallel.replicated(mesh),
        )
    rows = slice(0, batch_size) if mesh is None else parallel.process_rows(batch_size)

    def encode(variables, images, progress: bool = False, description: str = "Encoding") -> np.ndarray:
        if mesh is not None:
            variables = parallel.put_replicated(variables, mesh)
        chunks = []
        for start in tqdm.trange(0, len(images), batch_size, desc=description, unit="batch", disable=not progress, leave=False):
            # This process's rows of the batch; past the last image, blank ones (one shape, one compilation).
            first, last = min(start + rows.start, len(images)), min(start + rows.stop, len(images))
            batch = np.zeros((rows.stop - rows.start, *images.shape[1:]), images.dtype)
            batch[: last - first] = images[first:last]
            if mesh is not None:
                batch = parallel.global_batch(batch, mesh)
            chunks.append(parallel.host_value(forward(variables, batch))[: min(batch_size, len(images) - start)])
        return np.concatenate(chunks)

    return encode


def prototype_accuracy(features: np.ndarray, split: ClassIndexedSplit, count: int, seed: int = 0) -> float:
    """Mean 5-way 1-shot prototype-classifier accuracy on `count` fixed episodes of encoded `split`."""
    feature_split = ClassIndexedSplit(features, split.class_starts, split.identity + "/features")
    episodes, _ = evaluate.fixed_episodes(feature_split, episodes_lib.EpisodeSpec(5, 1, 15), count, seed)
    return float(np.mean(evaluate.prototype_accuracies(episodes, 5)))


class PretrainProgress(NamedTuple):
    """Everything pretraining carries from one epoch to the next: resuming from it continues exactly."""

    epochs_done: int
    state: PretrainState
    best_validation: float
    best_variables: Any  # the backbone variables of the best epoch so far
    history: list  # one dict per finished epoch


HISTORY_FIELDS = ("epoch", "loss", "train_accuracy", "validation_1shot_accuracy")


def initial_progress(backbone: nn.Module, train_split: ClassIndexedSplit, config: PretrainConfig) -> PretrainProgress:
    """The progress before the first epoch (best_variables: the initial backbone's, as a shape template)."""
    model = Classifier(backbone, train_split.num_classes, config.rotation)
    steps = config.epochs * max(1, int(np.sum(train_split.class_sizes)) // config.batch_size)
    variables = model.init(jax.random.PRNGKey(config.seed), jnp.zeros((1, *train_split.image_shape), jnp.float32), train=False)
    state = PretrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"], make_optimizer(config, steps).init(variables["params"]))
    return PretrainProgress(0, state, -1.0, {"params": variables["params"]["backbone"], "batch_stats": variables["batch_stats"]["backbone"]}, [])


def progress_record(progress: PretrainProgress) -> dict:
    """A PretrainProgress as a tree of arrays (for a checkpoint); history as a (epochs, 4) table."""
    table = np.array([[record[name] for name in HISTORY_FIELDS] for record in progress.history], np.float64).reshape(-1, len(HISTORY_FIELDS))
    return {
        "epochs_done": np.int32(progress.epochs_done),
        "state": progress.state,
        "best_validation": np.float64(progress.best_validation),
        "best_variables": progress.best_variables,
        "history": table,
    }


def progress_from_record(record: dict) -> PretrainProgress:
    history = [{"epoch": int(row[0]), **{name: float(value) for name, value in zip(HISTORY_FIELDS[1:], row[1:])}} for row in np.asarray(record["history"])]
    state = jax.tree_util.tree_map(jnp.asarray, record["state"])
    return PretrainProgress(int(record["epochs_done"]), state, float(record["best_validation"]), record["best_variables"], history)


def pretrain(
    backbone: nn.Module,
    train_split: ClassIndexedSplit,
    validation_split: ClassIndexedSplit,
    config: PretrainConfig,
    progress: bool = True,
    resume: PretrainProgress | None = None,
    on_epoch: Callable[[PretrainProgress], None] | None = None,
    mesh=None,
):
    """Trains `backbone` with a class head over all train classes; keeps the epoch whose features give the
    best 5-way 1-shot prototype accuracy on validation episodes.

    With a `mesh` (metadiff_jax.parallel) the step and the validation encoding are data-parallel over it:
    each batch of `batch_size` images split over the devices, each process reading only its rows of it;
    batch norm normalises over the whole batch, so the result is the one-device run's up to rounding.

    `on_epoch(progress)` is called after every finished epoch (e.g. to save it; the state is donated to the
    next step, so copy what you keep); `resume` continues from such
    a progress: an epoch's batches and augmentation are functions of (seed, epoch, step), so a resumed run
    ends exactly where an uninterrupted one does. Returns (backbone variables {"params", "batch_stats"} of
    the best epoch, history: list of per-epoch dicts).
    """
    model = Classifier(backbone, train_split.num_classes, config.rotation)
    labels_all = np.repeat(np.arange(train_split.num_classes, dtype=np.int32), train_split.class_sizes)
    steps_per_epoch = len(labels_all) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(labels_all)} training images; lower it.")
    rng = jax.random.PRNGKey(config.seed)
    optimizer = make_optimizer(config, config.epochs * steps_per_epoch)
    resume = resume or initial_progress(backbone, train_split, config)
    state, best, history = resume.state, (resume.best_validation, resume.best_variables), list(resume.history)
    train_step = make_train_step(model, optimizer, config, mesh)
    encode = make_encoder(backbone, mesh=mesh)
    if mesh is None:
        rows, place = slice(0, config.batch_size), (lambda batch: batch)
    else:
        parallel.check_divisible(config.batch_size, mesh, "images per pretraining batch (pretrain.batch_size)")
        rows, place = parallel.process_rows(config.batch_size), (lambda batch: parallel.global_batch(batch, mesh))
        state = parallel.put_replicated(state, mesh)
    for epoch in range(resume.epochs_done, config.epochs):
        order = np.random.default_rng([config.seed, epoch]).permutation(len(labels_all))
        # Each process reads only its rows of every batch (sorted: a split read from disk reads in order).
        indices = (np.sort(order[step * config.batch_size : (step + 1) * config.batch_size])[rows] for step in range(steps_per_epoch))
        # Read in a background thread, two batches ahead: a split read from disk (dataset.in_memory=False)
        # then loads while the device trains.
        batches = episodes_lib.prefetch((train_split.images[index], labels_all[index]) for index in indices)
        losses, accuracies = [], []
        description = f"Pretraining epoch {epoch + 1}/{config.epochs}"
        with tqdm.tqdm(batches, total=steps_per_epoch, desc=description, unit="batch", disable=not progress, leave=False) as bar:
            for batch in bar:
                state, metrics = train_step(state, place(batch), rng)
                losses.append(metrics["loss"])
                accuracies.append(metrics["accuracy"])
        loop.raise_if_diverged(state, {"loss": losses[-1]}, f"Pretraining (epoch {epoch + 1})")
        backbone_variables = {"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]}
        features = encode(backbone_variables, validation_split.images)
        validation = prototype_accuracy(features, validation_split, config.validation_episodes)
        record = {
            "epoch": epoch + 1,
            "loss": float(np.mean([parallel.host_value(loss) for loss in losses])),
            "train_accuracy": float(np.mean([parallel.host_value(accuracy) for accuracy in accuracies])),
            "validation_1shot_accuracy": validation,
        }
        history.append(record)
        if progress:
            tqdm.tqdm.write(
                f"epoch {epoch + 1}: loss {record['loss']:.3f}, train accuracy {record['train_accuracy']:.3f}, "
                f"validation 5-way 1-shot prototypes {validation:.3f}"
            )
        if validation > best[0]:
            best = (validation, jax.tree_util.tree_map(parallel.host_value, backbone_variables))
        if on_epoch is not None:
            on_epoch(PretrainProgress(epoch + 1, state, best[0], best[1], list(history)))
    return best[1], history
