"""The main job's stages, each skipped on a rerun when its output is already in the workdir.

dataset -> pretrained backbone -> feature cache -> per shot count: MetaDiff meta-trained (or a baseline
meta-trained on image episodes). Each stage reads its settings through launch/settings.py, calls the
library, and saves what it made through metadiff_jax.checkpoints; with `Job.evaluate_only` (`eval`) a stage
that is not done already is an error, never trained.

In a multi-host run every process runs the same stages, and each is data-parallel over the config's mesh
(the global batch split over the 'data' axis, each process reading only its rows of it): pretraining and
feature encoding (batch norm over the global batch), MetaDiff's outer step and sampler, and the image-episode
baselines' outer step and evaluation. Only process 0 writes logs and caches; every process takes part in
orbax's saves, which write each array once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np

from launch import feature_cache, provenance, report, settings
from launch.errors import UsageError
from launch.report import say
from launch.signals import StopOnSignal
from launch.workdir import write_text
from metadiff_jax import backbones, checkpoints, evaluate, loop, parallel, pretrain, rivals, train
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax.data import datasets, episodes


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


def _latest_saved_step(progress: pathlib.Path) -> int:
    """The step of the latest checkpoint a stopped run left in `progress` (where a rerun resumes), 0 if none."""
    return max((int(p.name) for p in progress.iterdir() if p.name.isdigit()), default=0) if progress.is_dir() else 0


def _resuming(progress: pathlib.Path) -> str:
    """", resuming from the checkpoint of step N" where a stopped run left checkpoints, else ""."""
    step = _latest_saved_step(progress)
    return f", resuming from the checkpoint of step {step}" if step else ""


def earlier_processes(record_path: pathlib.Path, first_step: int) -> list[dict]:
    """The processes that trained a resumed baseline before this one, from its validation record: none for a run
    from step 0; for a record written before records listed processes, one whose commit was not recorded."""
    if first_step == 0 or not record_path.exists():
        return []
    record = json.loads(record_path.read_text())
    return record.get("processes", [{"commit": provenance.NOT_RECORDED, "from_step": 0, "to_step": record["steps_run"], "minutes": None}])


def _made_from(config, data_identity: str, shots: int) -> dict:
    """What a training stage's checkpoints record, and a resume must match."""
    return {"config": json.loads(config.to_json()), "data": data_identity, "shots": shots}


def restore_or_train(job: Job, name: str, template, train_stage, label: str, requirement: str):
    """A finished stage's tree: restored from workdir/checkpoints/<name> where a run saved it ("[label] done
    earlier"), else made by train_stage() and saved there; a stage counts as done once its save committed.
    With `eval`, a stage not done is an error naming the `requirement`, never trained."""
    path = (job.workdir / "checkpoints" / name).absolute()
    if checkpoints.is_saved(path):
        say(f"[{label}] done earlier: restoring {path}")
        return checkpoints.restore_tree(path, template)
    job.require_done(requirement)
    tree = train_stage()
    checkpoints.save_tree(path, tree)
    return tree


def dataset(config):
    """The tfds builder, built if missing: by process 0 first, then by any process that does not see it."""
    def build():
        return datasets.build(
            config.dataset.name,
            config.dataset.config,
            settings.data_dir(config),
            config.dataset.workers or None,
            config.dataset.manual_dir,
            config.dataset.strict,
        )

    builder = build() if parallel.is_main_process() else None
    parallel.barrier("dataset built by process 0")
    return builder or build()


def pretrained_backbone(job: Job, splits):
    """Pretrained backbone variables: restored from workdir/checkpoints/backbone, or trained and saved there."""
    config, workdir, writer = job.config, job.workdir, job.writer
    backbone = settings.make_backbone(config)
    abstract = jax.eval_shape(lambda: backbones.init_variables(backbone, jax.random.PRNGKey(0), splits["train"].image_shape))

    def pretrain_backbone():
        pretrain_config = settings.pretrain_config(config)
        # Every finished epoch is saved: a stopped run resumes from its last finished epoch, exactly.
        made_from = _made_from(config, splits["train"].identity, 0)
        manager = checkpoints.checkpoint_manager(str((workdir / "checkpoints" / "backbone").absolute()) + "_progress", made_from, max_to_keep=1)
        checkpoints.check_metadata(manager, made_from)
        template = pretrain.progress_record(pretrain.initial_progress(backbone, splits["train"], pretrain_config))
        restored = checkpoints.restore_latest(manager, template)
        resume = None if restored is None else pretrain.progress_from_record(restored[0])
        done = "" if resume is None else f", resuming after epoch {resume.epochs_done}"
        say(f"[pretrain] {config.backbone.name} on {splits['train'].num_classes} classes for {config.pretrain.epochs} epochs{done}")

        def save_epoch(progress) -> None:
            checkpoints.save_record(manager, progress.epochs_done, pretrain.progress_record(progress))
            manager.wait_until_finished()  # a stop right after an epoch keeps it

        try:
            variables, history = pretrain.pretrain(
                backbone, splits["train"], splits["validation"], pretrain_config, parallel.is_main_process(), resume, save_epoch, job.mesh
            )
        finally:
            manager.close()
        for record in history:
            writer.add_scalar("pretrain/loss", record["loss"], record["epoch"])
            writer.add_scalar("pretrain/validation_1shot_accuracy", record["validation_1shot_accuracy"], record["epoch"])
        if parallel.is_main_process():
            write_text(workdir / "pretrain_history.json", json.dumps(history, indent=2))
        return variables

    return backbone, restore_or_train(job, "backbone", abstract, pretrain_backbone, "pretrain", "pretraining")


def encoded_features(job: Job, backbone, variables, splits, dataset_identity: str):
    """Features of every split from the frozen backbone, cached in workdir/features/<key>.npz."""
    key = feature_cache.cache_key(variables, dataset_identity)
    path = job.workdir / "features" / f"{key}.npz"
    cached = path.exists()
    parallel.barrier("feature cache looked up")  # every process decides before process 0 may write it
    if cached:
        say(f"[features] cached for this backbone and dataset: {path}")
    else:
        job.require_done("feature cache")
        say("[features] encoding every split with the frozen backbone")
        encode = pretrain.make_encoder(backbone, mesh=job.mesh)
        main = parallel.is_main_process()
        encoded = {name: encode(variables, split.images, progress=main, description=f"Encoding {name}") for name, split in splits.items()}
        if main:
            feature_cache.write(path, key, encoded)
    parallel.barrier("feature cache written")  # every process reads the file process 0 wrote
    arrays = feature_cache.load(path, key, splits)
    return {name: datasets.ClassIndexedSplit(arrays[name], split.class_starts, f"{split.identity}/features/{key}") for name, split in splits.items()}


DENOISER_TRAININGS = {"metadiff": "MetaDiff", "regressor": "one-step regressor"}


def trained_denoiser(job: Job, name: str, shots: int, spec, features, overrides: dict) -> train.TrainedDenoiser:
    """A denoiser meta-trained on the base classes' feature episodes with MetaDiff's settings changed by
    `overrides` (TrainConfig fields): MetaDiff itself (name "metadiff", no overrides), or the one-step
    regressor (name "regressor"). Restored from workdir/checkpoints/<name>_<shots>shot when finished; else
    trained, resuming from workdir/checkpoints/<name>_<shots>shot_progress where a stopped run left it."""
    config, workdir, writer = job.config, job.workdir, job.writer
    training = dataclasses.replace(settings.train_config(config), **overrides)
    label = report.stage_name(name, shots)
    if training.patience is not None and not config.checkpoint.validation_episodes:
        say(f"[{label}] checkpoint.validation_episodes = 0: no validation to stop on, so all {training.steps} steps are trained")
        training = dataclasses.replace(training, patience=None)
    model = settings.make_denoiser(config, features["train"].images.shape[-1])
    noise = settings.noise_schedule(config)
    sample_task = train.weights_reader(model, noise, training, settings.sampler_config(config))
    evaluator = evaluate.make_evaluator(sample_task, spec.ways, model.dim, mesh=job.mesh)
    losses_path = workdir / f"{name}_{shots}shot_losses.npy"
    params = denoiser_lib.init_params(model, jax.random.PRNGKey(config.seed))
    progress = workdir.absolute() / "checkpoints" / f"{name}_{shots}shot_progress"

    def to_evaluate(final):
        """(parameters, step) tested: the final ones (the reference), or the EMA best on validation (always, for
        a training stopped by its patience)."""
        if config.metadiff.evaluate == "final" and training.patience is None:
            return final["ema_params" if config.metadiff.evaluate_ema else "params"], training.steps
        best, step = checkpoints.restore_best(str(progress), {"ema_params": params})
        why = "metadiff.evaluate = best" if training.patience is None else f"trained until {training.patience} validations passed without a better one"
        say(f"[{label}] evaluating the EMA parameters of step {step}, the best on validation ({why})")
        return best["ema_params"], step

    if training.steps == 0:
        say(f"[{label}] metadiff.steps = 0: evaluating the untrained denoiser")
        return train.TrainedDenoiser(model, noise, params, np.zeros((0,), np.float32), sample_task, 0, evaluator, 0)

    def meta_train():
        policy = settings.checkpoint_policy(config, progress, _made_from(config, features["train"].identity, shots))
        validate, history = None, []
        if config.checkpoint.validation_episodes:
            plan = episodes.sample_plan(features["validation"], spec, config.episodes.test_seed, np.arange(config.checkpoint.validation_episodes))
            validation = evaluate.episodes_from_plan(features["validation"], plan)

            def validate(ema_params, step: int) -> float:
                accuracy = float(evaluator(ema_params, validation, jax.random.PRNGKey(config.seed))[0].mean())
                writer.add_scalar(f"{name}_{shots}shot/validation_accuracy", accuracy, step)
                history.append({"step": step, "validation_accuracy": accuracy})
                return accuracy

        with job.stopper.deferred():
            say(f"[{label}] meta-training {training.steps} steps on {features['train'].num_classes} base classes{_resuming(progress)}")
            state, losses = train.train_denoiser(
                model, noise, params, features["train"], spec, training, parallel.is_main_process(), job.mesh, policy, job.stopper, validate,
                config.parallel.style,
            )
        if history and parallel.is_main_process():
            best = max(history, key=lambda record: record["validation_accuracy"])
            say(f"[{label}] best validation accuracy {100 * best['validation_accuracy']:.2f}% at step {best['step']} (kept in {progress}_best)")
            write_text(workdir / f"{name}_{shots}shot_validation.json", json.dumps(history, indent=2))
        for step in range(0, len(losses), 50):
            writer.add_scalar(f"{name}_{shots}shot/loss", float(losses[step]), step)
        if parallel.is_main_process():
            np.save(losses_path, losses)  # before the stage's save: a finished stage always has its losses
        parallel.barrier("losses written")
        return {"params": state.params, "ema_params": state.ema_params}

    requirement = f"{DENOISER_TRAININGS.get(name, name)} {shots}-shot training"
    final = restore_or_train(job, f"{name}_{shots}shot", {"params": params, "ema_params": params}, meta_train, label, requirement)
    tested, tested_step = to_evaluate(final)
    return train.TrainedDenoiser(model, noise, tested, np.load(losses_path), sample_task, training.steps, evaluator, tested_step)


def baseline(job: Job, shots: int, spec, splits):
    """A baseline meta-trained on image episodes of the train split: restored, or trained and saved.

    Scored on `baseline.validation_episodes` validation episodes every `baseline.validate_every` steps (when
    it is saved); training stops once `baseline.patience` of them in a row have not beaten the best, and the
    state kept (and tested) is the best on validation: the budget is "until validation accuracy stops
    rising", capped at baseline.steps."""
    config, workdir, writer = job.config, job.workdir, job.writer
    learner = settings.make_baseline(config, spec.ways)
    state = learner.init(jax.random.PRNGKey(config.seed), np.zeros((1, *splits["train"].image_shape), np.float32))
    label = report.stage_name(config.method, shots)

    def meta_train():
        progress = workdir.absolute() / "checkpoints" / f"{config.method}_{shots}shot_progress"
        policy = dataclasses.replace(
            settings.checkpoint_policy(config, progress, _made_from(config, splits["train"].identity, shots)), every=config.baseline.validate_every
        )
        # Data-parallel like MetaDiff's outer step: the state replicated, each batch's episodes split over the
        # mesh (each process sampling only its own), in the config's parallel style.
        make_step = lambda axis_name=None: functools.partial(learner.meta_train_step, axis_name=axis_name)
        step = parallel.data_parallel_step(make_step, job.mesh, config.parallel.style)

        def batches_from(first_step: int):
            stream = episodes.prefetch(
                episodes.episode_batches(
                    splits["train"], spec, config.seed, config.baseline.meta_batch, first_batch=first_step,
                    shard_index=jax.process_index(), shard_count=jax.process_count(),
                )
            )
            return (parallel.global_batch((b.support_images, b.support_labels, b.query_images, b.query_labels), job.mesh) for b in stream)

        plan = episodes.sample_plan(splits["validation"], spec, config.episodes.test_seed, np.arange(config.baseline.validation_episodes))
        validation_images = episodes.gather(splits["validation"], plan)
        history = []

        record_path = workdir / f"{config.method}_{shots}shot_validation.json"
        # Every process that trained the run, with its commit, steps and wall minutes: a run resumed across
        # sessions is traced to each code that trained part of it.
        first_step, started = _latest_saved_step(progress), time.perf_counter()
        earlier = earlier_processes(record_path, first_step)

        def write_record(finished: bool, steps_run: int, best_step: int) -> None:
            minutes = round((time.perf_counter() - started) / 60, 1)
            this = {"commit": provenance.this_process()["commit"], "from_step": first_step, "to_step": steps_run, "minutes": minutes}
            record = {"finished": finished, "steps_run": steps_run, "best_step": best_step, "validations_this_run": history, "processes": [*earlier, this]}
            write_text(record_path, json.dumps(record, indent=2))

        def validate(state, step: int) -> float:
            accuracy = float(evaluate.image_episode_accuracies(learner.query_accuracy, state, validation_images, progress=False, mesh=job.mesh).mean())
            writer.add_scalar(f"{config.method}_{shots}shot/validation_accuracy", accuracy, step)
            history.append({"step": step, "validation_accuracy": accuracy})
            if parallel.is_main_process():
                # Written at every check, so a run stopped before its end still says how far it got.
                write_record(False, step, max(history, key=lambda record: record["validation_accuracy"])["step"])
            return accuracy

        with job.stopper.deferred():
            say(f"[{label}] meta-training up to {config.baseline.steps} outer steps on image episodes{_resuming(progress)}")
            _, losses = loop.checkpointed_loop(
                step,
                state,
                batches_from,
                config.baseline.steps,
                jax.random.PRNGKey(config.seed),
                check=lambda state, metrics: loop.raise_if_diverged(state, metrics, config.method),
                check_every=10,
                checkpoints=policy,
                should_stop=job.stopper,
                validate=validate,
                patience=config.baseline.patience,
                place_state=lambda state: parallel.put_replicated(state, job.mesh),
                wait_each_step=parallel.fake_cpu_devices(job.mesh),
                progress=parallel.is_main_process(),
                description=label,
            )
        best, best_step = checkpoints.restore_best(str(progress), state)
        say(f"[{label}] trained {len(losses)} steps; the best on validation is step {best_step}, kept and tested")
        if parallel.is_main_process():
            write_record(True, len(losses), best_step)
        for index in range(9, len(losses), 10):
            writer.add_scalar(f"{config.method}_{shots}shot/loss", float(losses[index]), index)
        return best

    return learner, restore_or_train(job, f"{config.method}_{shots}shot", state, meta_train, label, f"{config.method} {shots}-shot training")


def test_episodes(job: Job, splits, spec, shots: int) -> episodes.EpisodePlan:
    """The fixed test episodes of this shot count: drawn from the test split and saved beside the results;
    `eval` reloads the run's own saved list."""
    config = job.config
    plan = episodes.sample_plan(splits["test"], spec, config.episodes.test_seed, np.arange(config.episodes.test_episodes))
    path = job.workdir / f"test_episodes_{shots}shot.npz"
    if job.evaluate_only:
        return episodes.load_plan(path, splits["test"])[0]
    if parallel.is_main_process():
        episodes.save_plan(path, plan, splits["test"], spec, config.episodes.test_seed)
    return plan


def evaluate_baseline(job: Job, outcome, shots: int, spec, splits, plan) -> None:
    """A baseline's per-episode test accuracies, into `outcome` (report.Outcome)."""
    learner, state = baseline(job, shots, spec, splits)
    say(f"[evaluate {shots}-shot] {len(plan.classes)} fixed test episodes")
    accuracies = evaluate.image_episode_accuracies(
        learner.query_accuracy, state, episodes.gather(splits["test"], plan), parallel.is_main_process(), job.mesh
    )
    outcome.add(job.config.method, accuracies, spec, plan)


def validation_episodes(job: Job, features, spec) -> evaluate.FeatureEpisodes:
    """The validation episodes on which every row's hyperparameters are chosen (never the test episodes)."""
    count = job.config.rivals.validation_episodes
    plan = episodes.sample_plan(features["validation"], spec, job.config.episodes.test_seed, np.arange(count))
    return evaluate.episodes_from_plan(features["validation"], plan)


def evaluate_metadiff(job: Job, outcome, shots: int, spec, features, plan, validation) -> None:
    """MetaDiff's per-episode test accuracies, and its accuracy on the validation episodes, into `outcome`."""
    trained = trained_denoiser(job, "metadiff", shots, spec, features, {})
    if len(trained.losses):
        outcome.loss_curves[f"{shots}-shot"] = trained.losses
    test = evaluate.episodes_from_plan(features["test"], plan)
    say(f"[evaluate {shots}-shot] {len(plan.classes)} fixed test episodes, sampler {job.config.metadiff.sampler.method}")
    accuracies, per_step = trained.evaluator(trained.params, test, jax.random.PRNGKey(job.config.seed))
    outcome.add("metadiff", accuracies, spec, plan)
    validation_accuracy = float(trained.evaluator(trained.params, validation, jax.random.PRNGKey(job.config.seed))[0].mean())
    outcome.choose(shots, "metadiff", {"steps": trained.tested_step}, validation_accuracy)
    outcome.curves[f"metadiff {shots}-shot"] = per_step


def evaluate_rivals(job: Job, outcome, shots: int, spec, features, plan, validation) -> None:
    """The non-diffusion rows on the same features and test episodes (metadiff_jax/rivals.py: the prototype
    classifier, and each rival of rivals.rows), each with its hyperparameters chosen on validation
    episodes, into `outcome`."""
    config = job.config
    rows = settings.rival_settings(config)
    say(f"[rivals {shots}-shot] {', '.join(rows)}: hyperparameters chosen on {config.rivals.validation_episodes} validation episodes")
    context = rivals.RivalContext(
        features["train"],
        spec,
        config.seed,
        validation,
        evaluate.episodes_from_plan(features["test"], plan),
        lambda name, overrides: trained_denoiser(job, name, shots, spec, features, overrides),
    )
    with outcome.timed(report.stage_name("prototypes", shots)):
        selected = {"prototypes": rivals.select_prototypes(context)}
    outcome.baselines[f"prototypes {shots}-shot"] = float(selected["prototypes"].test_accuracies.mean())
    for name, rival_settings in rows.items():
        rival = rivals.RIVALS[name]
        with outcome.timed(report.stage_name(rival.row, shots)):
            selected[rival.row] = rival.select(rival_settings, context)
    for row, chosen in selected.items():
        outcome.add(row, chosen.test_accuracies, spec, plan)
        outcome.choose(shots, row, chosen.choice, chosen.validation_accuracy)
