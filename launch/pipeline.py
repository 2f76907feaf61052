"""The main job's stages, each skipped on a rerun when its output is already in the workdir.

dataset -> pretrain the backbone -> feature cache -> per shot count: meta-train MetaDiff -> evaluate.
This is the file-and-flag layer: the library functions it calls take arrays and return arrays.

In a multi-host run every process runs this same code on a workdir they all see (a shared filesystem):
MetaDiff's outer step and sampler are data-parallel over the mesh of every device (config.parallel);
pretraining, feature encoding and the image-episode baselines run whole on each process's first device
(identical, deterministic work); only process 0 writes logs, plots, caches and results, and every
process takes part in orbax's checkpoint saves, which write each array once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import signal
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
import tensorboardX
import tqdm
import zipfile

from metadiff_jax import backbones, denoiser, differentiable, diffusion, evaluate, parallel, plots, pretrain, sampler, schedule, train
from metadiff_jax.baselines import gradient, protonet
from metadiff_jax.data import datasets, episodes

METHODS = ("metadiff", *gradient.METHODS, "protonet")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "tensorflow-datasets", "numpy", "kanjivg")


class UsageError(ValueError):
    """Bad input found before any long work; the message says how to fix it."""


class Irreproducible(RuntimeError):
    """`eval` of a finished run gave other numbers than its results.json."""


class Stopped(Exception):
    """A signal stopped the job outside a checkpointed training loop; every finished stage is kept."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class StopOnSignal:
    """SIGTERM / SIGINT handling: inside a checkpointed training loop (`deferred()`), a request the loop honours
    at its next step by saving a checkpoint and stopping; anywhere else, an immediate Stopped. A second
    signal always stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._deferring = 0

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if not first or not self._deferring:
            raise Stopped(signum)

    def __call__(self) -> bool:
        return self.signum is not None

    @contextlib.contextmanager
    def deferred(self):
        if self.signum is not None:
            raise Stopped(self.signum)
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1


@dataclasses.dataclass
class Job:
    """What every stage needs: the config, the workdir, the TensorBoard writer, the mesh, signal handling,
    and whether this is `eval` (every stage must be done already; nothing is trained)."""

    config: Any
    workdir: pathlib.Path
    writer: Any
    mesh: Any
    stopper: StopOnSignal
    evaluate_only: bool = False

    def require_done(self, what: str) -> None:
        if self.evaluate_only:
            raise UsageError(f"{self.workdir} has no finished {what}; `eval` evaluates a finished run: run the main job there first.")


def say(message: str) -> None:
    if parallel.is_main_process():
        print(message, flush=True)


class _NoWriter:
    """Stands in for the TensorBoard writer on processes other than 0."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _write_text(path: pathlib.Path, text: str) -> None:
    """Writes a file under its final name only once complete, so that a reader never sees half of it."""
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(text)
    temporary.replace(path)


def check_shared_workdir(workdir: pathlib.Path) -> None:
    """In a multi-host run, refuses a workdir that the processes do not all see (a host-local folder)."""
    if jax.process_count() == 1:
        return
    token = workdir / ".process0_token"
    if parallel.is_main_process():
        token.write_text("written by process 0")
    parallel.barrier("shared workdir token written")
    seen = multihost_utils.process_allgather(np.array(token.exists()))
    parallel.barrier("shared workdir token read")
    if parallel.is_main_process():
        token.unlink()
    if not np.all(seen):
        missing = ", ".join(str(i) for i in np.flatnonzero(~np.asarray(seen)))
        raise UsageError(
            f"{workdir} is not shared between the processes of this run: process(es) {missing} cannot see a file that "
            "process 0 wrote there. Pass a --workdir on a filesystem every host mounts (NFS, Filestore, a gcsfuse bucket)."
        )


def read_run_record(workdir: pathlib.Path):
    """The config recorded in workdir/run.json (None where there is none), with keys added to the project
    since the run was made filled with their defaults, which keep its old behaviour."""
    from configs import default

    record = workdir / "run.json"
    if not record.is_file():
        return None
    try:
        recorded = json.loads(record.read_text())["config"]
        config = default.get_config()
        config.update(recorded)
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{record} is not a run record ({type(error).__name__}: {error}); use a new --workdir.") from error
    return config


def check_run_identity(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir that holds another run (a different config), before anything is written to it."""
    recorded = read_run_record(workdir)
    if recorded is None:
        return
    previous = json.loads(recorded.to_json())
    current = json.loads(config.to_json())
    if previous != current:
        differing = sorted(config_differences(previous, current))
        raise UsageError(
            f"{workdir} holds another run: its config differs at {', '.join(differing)}. Nothing was changed. "
            "Use a new --workdir, or delete this one to start over."
        )


def record_run(workdir: pathlib.Path, config) -> None:
    record = workdir / "run.json"
    if not record.exists():
        started = datetime.datetime.now().isoformat(timespec="seconds")
        _write_text(record, json.dumps({"config": json.loads(config.to_json()), "started": started}, indent=2))


def config_differences(a, b, prefix: str = ""):
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            yield from config_differences(a[key], b[key], name + ".")
        elif a.get(key) != b.get(key):
            yield name


def data_dir(config) -> pathlib.Path:
    import tensorflow_datasets as tfds

    return pathlib.Path(config.dataset.data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR).expanduser()


def episode_specs(config) -> dict[int, episodes.EpisodeSpec]:
    shots = config.episodes.shots
    shots = (shots,) if isinstance(shots, int) else tuple(shots)
    return {k: episodes.EpisodeSpec(config.episodes.ways, int(k), config.episodes.queries) for k in shots}


def pretrain_config(config) -> pretrain.PretrainConfig:
    fields = {f.name for f in dataclasses.fields(pretrain.PretrainConfig)}
    values = {k: v for k, v in config.pretrain.to_dict().items() if k in fields}
    values["milestones"] = tuple(values["milestones"])
    return pretrain.PretrainConfig(**values, seed=config.seed)


def query_loss_config(config) -> differentiable.QueryLossConfig:
    m = config.metadiff
    return differentiable.QueryLossConfig(m.query_loss_steps, m.query_loss_backprop_steps or None, m.query_loss_remat)


def metadiff_train_config(config) -> train.TrainConfig:
    m = config.metadiff
    return train.TrainConfig(
        m.steps, m.batch_size, m.learning_rate, m.weight_decay, m.ema_decay, m.ema_start,
        seed=config.seed, query_loss_weight=m.query_loss_weight, query_loss=query_loss_config(config), targets=m.targets,
        finetune_steps=m.finetune_steps, finetune_learning_rate=m.finetune_learning_rate,
    )


def sampler_config(config) -> sampler.SamplerConfig:
    m = config.metadiff
    return sampler.SamplerConfig(m.sampler, m.sampler_steps or None, m.start)


def validate(config, splits: dict[str, datasets.ClassIndexedSplit]) -> None:
    """Every check that can fail before long work starts."""
    for spec in episode_specs(config).values():
        for split in splits.values():
            episodes.check_spec(split, spec)
    if config.method not in METHODS:
        raise UsageError(f"Unknown method {config.method!r}; known: {', '.join(METHODS)}.")
    if config.metadiff.denoiser not in denoiser.DENOISERS:
        raise UsageError(f"Unknown metadiff.denoiser {config.metadiff.denoiser!r}; known: {', '.join(denoiser.DENOISERS)}.")
    if config.backbone.name not in backbones.BACKBONES:
        raise UsageError(f"Unknown backbone.name {config.backbone.name!r}; known: {', '.join(backbones.BACKBONES)}.")
    try:
        sampler_config(config).validate(config.metadiff.timesteps)
        if config.metadiff.query_loss_weight:
            query_loss_config(config).validate(config.metadiff.timesteps)
        schedule.make_schedule(config.metadiff.schedule, config.metadiff.timesteps)
    except ValueError as error:
        raise UsageError(f"metadiff config: {error}") from error
    for key in ("batch_size", "timesteps"):
        if config.metadiff[key] < 1:
            raise UsageError(f"metadiff.{key} must be at least 1, got {config.metadiff[key]}.")
    if config.metadiff.steps < 0:
        raise UsageError(f"metadiff.steps must be 0 (evaluate the untrained denoiser) or more, got {config.metadiff.steps}.")
    if config.metadiff.condition not in denoiser.CONDITIONS:
        raise UsageError(f"Unknown metadiff.condition {config.metadiff.condition!r}; known: {', '.join(denoiser.CONDITIONS)}.")
    if config.metadiff.targets not in train.TARGETS:
        raise UsageError(f"Unknown metadiff.targets {config.metadiff.targets!r}; known: {', '.join(train.TARGETS)}.")
    if config.checkpoint.validation_episodes < 0:
        raise UsageError(f"checkpoint.validation_episodes must be 0 (off) or more, got {config.checkpoint.validation_episodes}.")
    for key in ("every", "keep"):
        if config.checkpoint[key] < 1:
            raise UsageError(f"checkpoint.{key} must be at least 1, got {config.checkpoint[key]}.")
    if config.pretrain.epochs < 1:
        raise UsageError(f"pretrain.epochs must be at least 1, got {config.pretrain.epochs}.")


def _save(path: pathlib.Path, tree) -> None:
    """Writes an orbax checkpoint and waits for it: a stage counts as done only once its save committed.

    Saved as host numpy arrays: with several processes orbax then writes each array once (from process 0),
    whether it was replicated over a multi-host mesh or computed on every process's own device.
    """
    checkpointer = _checkpointer()
    checkpointer.save(path, jax.tree_util.tree_map(parallel.host_value, tree))
    checkpointer.wait_until_finished()


def _restore(path: pathlib.Path, abstract):
    """Restores a checkpoint written by _save into host numpy arrays shaped like `abstract`."""
    target = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)
    return _checkpointer().restore(path, target)


def _checkpointer() -> ocp.StandardCheckpointer:
    return ocp.StandardCheckpointer()


def _saved(path: pathlib.Path) -> bool:
    return (path / "commit_success.txt").exists() or (path / "_CHECKPOINT_METADATA").exists()


def stage_pretrain(job: Job, splits):
    """Pretrained backbone variables: restored from workdir/checkpoints/backbone, or trained and saved there."""
    config, workdir, writer = job.config, job.workdir, job.writer
    backbone = backbones.make_backbone(config.backbone.name, config.backbone.width)
    path = (workdir / "checkpoints" / "backbone").absolute()
    abstract = jax.eval_shape(lambda: backbones.init_variables(backbone, jax.random.PRNGKey(0), splits["train"].image_shape))
    if _saved(path):
        say(f"[pretrain] done earlier: restoring {path}")
        return backbone, _restore(path, abstract)
    job.require_done("pretraining")
    say(f"[pretrain] {config.backbone.name} on {splits['train'].num_classes} classes for {config.pretrain.epochs} epochs")
    variables, history = pretrain.pretrain(backbone, splits["train"], splits["validation"], pretrain_config(config), progress=parallel.is_main_process())
    for record in history:
        writer.add_scalar("pretrain/loss", record["loss"], record["epoch"])
        writer.add_scalar("pretrain/validation_1shot_accuracy", record["validation_1shot_accuracy"], record["epoch"])
    if parallel.is_main_process():
        _write_text(workdir / "pretrain_history.json", json.dumps(history, indent=2))
    _save(path, variables)
    return backbone, variables


def feature_cache_key(variables, dataset_identity: str) -> str:
    """sha256 of the backbone's weights and the dataset's identity: a new key when either changes."""
    digest = hashlib.sha256(dataset_identity.encode())
    for leaf in jax.tree_util.tree_leaves(variables):
        digest.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return digest.hexdigest()[:16]


def stage_features(job: Job, backbone, variables, splits, dataset_identity: str):
    """Features of every split from the frozen backbone, cached in workdir/features/<key>.npz."""
    key = feature_cache_key(variables, dataset_identity)
    path = job.workdir / "features" / f"{key}.npz"
    if path.exists():
        say(f"[features] cached for this backbone and dataset: {path}")
    elif parallel.is_main_process():
        job.require_done("feature cache")
        say("[features] encoding every split with the frozen backbone")
        encode = pretrain.make_encoder(backbone)
        arrays = {name: encode(variables, split.images, progress=True, description=f"Encoding {name}") for name, split in splits.items()}
        path.parent.mkdir(exist_ok=True)
        temporary = path.with_suffix(".partial.npz")
        np.savez(temporary, cache_key=np.array(key), **arrays)
        temporary.rename(path)  # a killed run never leaves a half-written cache under the final name
    parallel.barrier("feature cache written")  # other processes read what process 0 encoded
    arrays = load_feature_cache(path, key, splits)
    return {
        name: datasets.ClassIndexedSplit(arrays[name], split.class_starts, f"{split.identity}/features/{key}")
        for name, split in splits.items()
    }


def load_feature_cache(path: pathlib.Path, key: str, splits) -> dict[str, np.ndarray]:
    """The cached features, checked against the backbone's key and the splits' sizes before use."""
    remedy = f"Delete {path} to encode the features again (nothing else is lost)."
    try:
        with np.load(path) as cached:
            stored_key = str(cached["cache_key"]) if "cache_key" in cached.files else None
            missing = [name for name in splits if name not in cached.files]
            arrays = {name: cached[name] for name in splits if name in cached.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(f"feature cache {path} is damaged ({type(error).__name__}: {error}). {remedy}") from error
    if stored_key != key:
        raise UsageError(f"feature cache {path} no longer matches its backbone: it was made for key {stored_key}, the backbone and dataset now give {key}. {remedy}")
    if missing:
        raise UsageError(f"feature cache {path} has no features for split(s) {', '.join(missing)}. {remedy}")
    for name, split in splits.items():
        if len(arrays[name]) != len(split.images):
            raise UsageError(f"feature cache {path} holds {len(arrays[name])} {name} rows for {len(split.images)} {name} images. {remedy}")
    return arrays


def scale_to_unit_targets(features):
    """Multiplies every split by 1 / std of the train class means, so MetaDiff's targets W0 have unit scale.

    Diffusion assumes data on the scale of its N(0, I) noise; pooled ReLU features are not (Conv-4's have
    norms near 40). One scalar for all splits leaves cosine classifiers, and so the prototype baseline,
    unchanged. Returns (scaled splits, the scale).
    """
    targets = diffusion.class_mean_targets(features["train"].images, features["train"].class_starts)
    scale = float(1.0 / targets.std())
    scaled = {name: dataclasses.replace(split, images=(split.images * scale).astype(np.float32)) for name, split in features.items()}
    return scaled, scale


def _resuming(progress: pathlib.Path) -> str:
    """", resuming from the checkpoint of step N" where a stopped run left checkpoints, else ""."""
    saved_steps = sorted(int(p.name) for p in progress.iterdir() if p.name.isdigit()) if progress.is_dir() else []
    return f", resuming from the checkpoint of step {saved_steps[-1]}" if saved_steps else ""


def stage_metatrain(job: Job, shots: int, spec, features):
    """MetaDiff for `shots`: restored from workdir/checkpoints/metadiff_<shots>shot when finished; else
    trained, resuming from workdir/checkpoints/metadiff_<shots>shot_progress where a stopped run left it."""
    config, workdir, writer = job.config, job.workdir, job.writer
    dim = features["train"].images.shape[-1]
    kwargs = {"condition": config.metadiff.condition} if config.metadiff.denoiser == "tcunet" else {}
    model = denoiser.make_denoiser(config.metadiff.denoiser, dim, **kwargs)
    noise = schedule.make_schedule(config.metadiff.schedule, config.metadiff.timesteps)
    path = (workdir / "checkpoints" / f"metadiff_{shots}shot").absolute()
    losses_path = workdir / f"metadiff_{shots}shot_losses.npy"
    params = denoiser.init_params(model, jax.random.PRNGKey(config.seed))
    chosen = "ema_params" if config.metadiff.evaluate_ema else "params"
    if config.metadiff.steps == 0:
        say(f"[metadiff {shots}-shot] metadiff.steps = 0: evaluating the untrained denoiser")
        return model, noise, params, np.zeros((0,), np.float32)
    if _saved(path) and losses_path.exists():
        say(f"[metadiff {shots}-shot] done earlier: restoring {path}")
        restored = _restore(path, {"params": params, "ema_params": params})
        return model, noise, restored[chosen], np.load(losses_path)
    job.require_done(f"MetaDiff {shots}-shot training")
    progress = workdir.absolute() / "checkpoints" / f"metadiff_{shots}shot_progress"
    made_from = {"config": json.loads(config.to_json()), "features": features["train"].identity, "shots": shots}
    policy = train.CheckpointPolicy(str(progress), config.checkpoint.every, config.checkpoint.keep, made_from)
    validate, history = None, []
    if config.checkpoint.validation_episodes:
        plan = episodes.sample_plan(features["validation"], spec, config.episodes.test_seed, np.arange(config.checkpoint.validation_episodes))
        validation = evaluate.episodes_from_plan(features["validation"], plan)
        evaluator = evaluate.make_evaluator(model, noise, sampler_config(config), spec.ways, mesh=job.mesh)

        def validate(ema_params, step: int) -> float:
            accuracy = float(evaluator(ema_params, validation, jax.random.PRNGKey(config.seed))[0].mean())
            writer.add_scalar(f"metadiff_{shots}shot/validation_accuracy", accuracy, step)
            history.append({"step": step, "validation_accuracy": accuracy})
            return accuracy

    with job.stopper.deferred():
        say(f"[metadiff {shots}-shot] meta-training {config.metadiff.steps} steps on {features['train'].num_classes} base classes{_resuming(progress)}")
        state, losses = train.train_denoiser(
            model, noise, params, features["train"], spec, metadiff_train_config(config), parallel.is_main_process(), job.mesh, policy, job.stopper, validate
        )
    if history and parallel.is_main_process():
        best = max(history, key=lambda record: record["validation_accuracy"])
        say(f"[metadiff {shots}-shot] best validation accuracy {100 * best['validation_accuracy']:.2f}% at step {best['step']} (kept in {progress}_best)")
        _write_text(workdir / f"metadiff_{shots}shot_validation.json", json.dumps(history, indent=2))
    for step in range(0, len(losses), 50):
        writer.add_scalar(f"metadiff_{shots}shot/loss", float(losses[step]), step)
    _save(path, {"params": state.params, "ema_params": state.ema_params})
    if parallel.is_main_process():
        np.save(losses_path, losses)
    parallel.barrier("losses written")
    return model, noise, getattr(state, chosen), losses


def make_baseline(config, ways: int):
    backbone = backbones.make_backbone(config.backbone.name, config.backbone.width)
    b = config.baseline
    if config.method == "protonet":
        return protonet.ProtoNetLearner(backbone, ways, b.outer_lr)
    return gradient.GradientMetaLearner(backbone, ways, gradient.GradientMetaConfig(config.method, b.inner_steps, b.inner_lr, b.outer_lr))


def stage_baseline(job: Job, shots: int, spec, splits):
    """A baseline meta-trained on image episodes of the train split: restored, or trained and saved."""
    config, workdir, writer = job.config, job.workdir, job.writer
    learner = make_baseline(config, spec.ways)
    state = learner.init(jax.random.PRNGKey(config.seed), np.zeros((1, *splits["train"].image_shape), np.float32))
    path = (workdir / "checkpoints" / f"{config.method}_{shots}shot").absolute()
    if _saved(path):
        say(f"[{config.method} {shots}-shot] done earlier: restoring {path}")
        return learner, _restore(path, state)
    job.require_done(f"{config.method} {shots}-shot training")
    progress = workdir.absolute() / "checkpoints" / f"{config.method}_{shots}shot_progress"
    made_from = {"config": json.loads(config.to_json()), "dataset": splits["train"].identity, "shots": shots}
    policy = train.CheckpointPolicy(str(progress), config.checkpoint.every, config.checkpoint.keep, made_from)
    step = jax.jit(learner.meta_train_step, donate_argnums=0)

    def batches_from(first_step: int):
        stream = episodes.prefetch(episodes.episode_batches(splits["train"], spec, config.seed, config.baseline.meta_batch, first_batch=first_step))
        return ((b.support_images, b.support_labels, b.query_images, b.query_labels) for b in stream)

    def check(state, metrics) -> None:
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise diffusion.TrainingDiverged(f"{config.method} diverged at outer step {int(state.step)}: the loss is {loss}.")

    with job.stopper.deferred():
        say(f"[{config.method} {shots}-shot] meta-training {config.baseline.steps} outer steps on image episodes{_resuming(progress)}")
        state, losses = train.checkpointed_loop(
            step, state, batches_from, config.baseline.steps, jax.random.PRNGKey(config.seed), check=check, check_every=10,
            checkpoints=policy, should_stop=job.stopper, progress=parallel.is_main_process(), description=f"{config.method} {shots}-shot",
        )
    for index in range(9, len(losses), 10):
        writer.add_scalar(f"{config.method}_{shots}shot/loss", float(losses[index]), index)
    _save(path, state)
    return learner, state


def baseline_accuracies(learner, state, test_images: episodes.Episodes) -> np.ndarray:
    """Per-episode query accuracy, one jitted call an episode: each episode adapts its own network, and XLA
    on CPU runs the inner loop's convolution gradients ~6x slower inside lax.map's while loop."""
    accuracy = jax.jit(learner.query_accuracy)
    arrays = [np.asarray(a) for a in test_images]
    episodes_range = tqdm.trange(len(arrays[0]), desc="evaluating", unit="episode", leave=False, disable=not parallel.is_main_process())
    return np.array([float(accuracy(state, *(a[i] for a in arrays))) for i in episodes_range])


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def format_results(results: list[evaluate.MethodResult]) -> str:
    lines = [
        "| method | ways | shots | episodes | accuracy (%) | paired diff vs prototypes (points) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        diff = "" if r.paired_diff is None else f"{100 * r.paired_diff:+.2f} +- {100 * r.paired_ci95:.2f}"
        lines.append(f"| {r.method} | {r.ways} | {r.shots} | {r.episodes} | {100 * r.accuracy:.2f} +- {100 * r.ci95:.2f} | {diff} |")
    return "\n".join(lines)


def build_dataset(config):
    """The tfds builder, built if missing: by process 0 first, then by any process that does not see it."""
    build = lambda: datasets.build(
        config.dataset.name, config.dataset.config, data_dir(config), config.dataset.workers or None, config.dataset.manual_dir, config.dataset.strict
    )
    builder = build() if parallel.is_main_process() else None
    parallel.barrier("dataset built by process 0")
    return builder or build()


def check_reproduced(workdir: pathlib.Path, results: list[evaluate.MethodResult], table: str) -> None:
    """Prints the table evaluated again and compares it with results.json, field by field, exactly."""
    recorded = {(r["method"], r["shots"]): r for r in json.loads((workdir / "results.json").read_text())["results"]}
    say("\n" + table)
    differences = []
    for result in results:
        saved = recorded.get((result.method, result.shots))
        if saved != dataclasses.asdict(result):
            differences.append(f"{result.method} {result.shots}-shot: results.json has {saved}, evaluated again {dataclasses.asdict(result)}")
    if differences:
        raise Irreproducible("the evaluation does not reproduce results.json:\n" + "\n".join(differences))
    say(f"\nReproduces {workdir / 'results.json'} exactly ({len(results)} rows).")


def run(config, workdir: pathlib.Path, stopper: StopOnSignal | None = None, evaluate_only: bool = False) -> list[evaluate.MethodResult]:
    """The main job. With evaluate_only (`python -m launch.main eval`), every stage must be done already:
    the saved models are evaluated again on the saved test episodes and compared with results.json."""
    main = parallel.is_main_process() and not evaluate_only  # the process that writes
    check_run_identity(workdir, config)
    check_shared_workdir(workdir)
    try:
        mesh = parallel.mesh_from_config(config.parallel.devices)
    except ValueError as error:
        raise UsageError(str(error)) from error
    builder = build_dataset(config)
    identity = datasets.dataset_identity(builder)
    splits = {name: datasets.load_split(builder, name, in_memory=config.dataset.in_memory) for name in datasets.SPLITS}
    validate(config, splits)
    if config.method == "metadiff" and config.metadiff.batch_size % mesh.size:
        raise UsageError(
            f"metadiff.batch_size {config.metadiff.batch_size} cannot be split over the {mesh.size} devices of the mesh; "
            f"set --config.metadiff.batch_size to a multiple of {mesh.size}."
        )
    if main:
        record_run(workdir, config)
    if evaluate_only and not (workdir / "results.json").exists():
        raise UsageError(f"{workdir} holds no finished run (no results.json); run the main job there first.")
    say(f"[mesh] {mesh.size} device(s) ({jax.devices()[0].platform}) in {jax.process_count()} process(es)")
    rows = datasets.summary(builder)
    say(f"\n[dataset] {identity} in {builder.data_dir}\n| split | classes | images |\n|---|---|---|")
    say("\n".join(f"| {r['split']} | {r['classes']} | {r['images']} |" for r in rows))
    if config.dataset.name == "kanjivg_glyphs":
        say("[dataset] renders of real glyph stroke data from KanjiVG, not Omniglot")
    for difference in builder.info.metadata.get("differences_from_official", []):
        say(f"[dataset] NOT the official release: {difference}")
    plot_dir = workdir / "plots"
    if main:
        plot_dir.mkdir(exist_ok=True)
        plots.sample_grid(splits["train"], rows=8, columns=10, seed=config.seed, title=identity).savefig(plot_dir / "data_samples.png", dpi=100)

    writer = tensorboardX.SummaryWriter(str(workdir / "tensorboard")) if main else _NoWriter()
    job = Job(config, workdir, writer, mesh, stopper or StopOnSignal(), evaluate_only)
    results, curves, baselines, loss_curves, test_hashes, per_episode = [], {}, {}, {}, {}, {}
    feature_scale = 1.0
    if config.method == "metadiff":
        backbone, variables = stage_pretrain(job, splits)
        features = stage_features(job, backbone, variables, splits, identity)
        if config.metadiff.unit_scale_targets:
            features, feature_scale = scale_to_unit_targets(features)
            say(f"[features] scaled by {feature_scale:.4g} so that the train class means have unit standard deviation")
    for shots, spec in episode_specs(config).items():
        plan = episodes.sample_plan(splits["test"], spec, config.episodes.test_seed, np.arange(config.episodes.test_episodes))
        test_hashes[str(shots)] = episodes.plan_hash(plan)
        if main:
            episodes.save_plan(workdir / f"test_episodes_{shots}shot.npz", plan, splits["test"], spec, config.episodes.test_seed)
        elif evaluate_only:
            plan = episodes.load_plan(workdir / f"test_episodes_{shots}shot.npz", splits["test"])[0]  # the run's own list
        if config.method != "metadiff":
            learner, state = stage_baseline(job, shots, spec, splits)
            say(f"[evaluate {shots}-shot] {config.episodes.test_episodes} fixed test episodes")
            accuracies = baseline_accuracies(learner, state, episodes.gather(splits["test"], plan))
            results.append(evaluate.summarize(config.method, accuracies, spec.ways, shots))
            per_episode[f"{config.method}_{shots}shot"] = accuracies
            continue
        model, noise, ema_params, losses = stage_metatrain(job, shots, spec, features)
        if len(losses):
            loss_curves[f"{shots}-shot"] = losses
        test = evaluate.episodes_from_plan(features["test"], plan)
        say(f"[evaluate {shots}-shot] {config.episodes.test_episodes} fixed test episodes, sampler {config.metadiff.sampler}")
        prototype_accuracies = evaluate.prototype_accuracies(test, spec.ways)
        evaluate_fn = evaluate.make_evaluator(model, noise, sampler_config(config), spec.ways, mesh=mesh)
        metadiff_accuracies, per_step = evaluate_fn(ema_params, test, jax.random.PRNGKey(config.seed))
        results.append(evaluate.summarize("prototypes", prototype_accuracies, spec.ways, shots))
        results.append(evaluate.summarize("metadiff", metadiff_accuracies, spec.ways, shots, reference=prototype_accuracies))
        per_episode[f"prototypes_{shots}shot"] = prototype_accuracies
        per_episode[f"metadiff_{shots}shot"] = metadiff_accuracies
        curves[f"metadiff {shots}-shot"] = per_step
        baselines[f"prototypes {shots}-shot"] = float(prototype_accuracies.mean())
    for result in results:
        writer.add_scalar(f"test/{result.method}_{result.shots}shot_accuracy", result.accuracy, 0)
    writer.close()
    table = format_results(results)
    if evaluate_only:
        check_reproduced(workdir, results, table)
        return results
    if not main:
        return results
    np.savez(workdir / "per_episode_accuracy.npz", **per_episode)

    if curves:
        plots.accuracy_per_step(curves, baselines, f"{identity}: test accuracy along the reverse process").savefig(plot_dir / "accuracy_per_step.png", dpi=110)
        if loss_curves:
            plots.training_loss(loss_curves, "MetaDiff training loss").savefig(plot_dir / "training_loss.png", dpi=110)
    _write_text(workdir / "results.md", table + "\n")
    _write_text(
        workdir / "results.json",
        json.dumps(
            {
                "results": [dataclasses.asdict(r) for r in results],
                "method": config.method,
                "dataset": identity,
                "seed": config.seed,
                "feature_scale": feature_scale,
                "devices": mesh.size,
                "processes": jax.process_count(),
                "test_episodes_sha256": test_hashes,
                "config": json.loads(config.to_json()),
                "versions": package_versions(),
                "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            },
            indent=2,
        ),
    )
    say("\n" + table)
    say(f"\nWrote {workdir / 'results.json'}, {workdir / 'results.md'}, plots in {plot_dir}, TensorBoard logs in {workdir / 'tensorboard'}")
    return results
