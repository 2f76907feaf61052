"""The main job, as the list of its stages (launch/stages.py); each is skipped on a rerun when done.

dataset -> pretrain the backbone -> feature cache -> per shot count: test episodes, meta-train MetaDiff (or
a baseline on image episodes), evaluate -> report. The files a run reads and writes are the business of
launch/workdir.py (run record), launch/feature_cache.py, metadiff_jax/checkpoints.py and launch/report.py;
the config is read through launch/settings.py only.
"""

from __future__ import annotations

import pathlib

import tensorboardX

from launch import report, settings, stages
from launch import workdir as workdir_lib
from launch.errors import UsageError
from launch.signals import StopOnSignal
from metadiff_jax import feature_splits, parallel, plots
from metadiff_jax.data import datasets


class _NoWriter:
    """Stands in for the TensorBoard writer on processes other than 0, and in `eval`."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def run(config, workdir: pathlib.Path, stopper: StopOnSignal | None = None, evaluate_only: bool = False) -> list:
    """The main job; returns its evaluate.MethodResult rows. With evaluate_only (`python -m launch.main
    eval`), every stage must be done already: the saved models are evaluated again on the saved test
    episodes and compared with results.json."""
    writes = parallel.is_main_process() and not evaluate_only
    workdir_lib.check_run_identity(workdir, config)
    workdir_lib.check_shared_workdir(workdir)
    try:
        mesh = parallel.mesh_from_config(config.parallel.devices)
    except ValueError as error:
        raise UsageError(str(error)) from error
    outcome = report.Outcome()
    with outcome.timed("dataset"):
        builder = stages.dataset(config)
        splits = {name: datasets.load_split(builder, name, in_memory=config.dataset.in_memory) for name in datasets.SPLITS}
    identity = datasets.dataset_identity(builder)
    settings.validate(config, splits, mesh)
    if evaluate_only and not (workdir / "results.json").exists():
        raise UsageError(f"{workdir} holds no finished run (no results.json); run the main job there first.")
    if writes:
        workdir_lib.record_run(workdir, config)
        (workdir / "plots").mkdir(exist_ok=True)
        plots.sample_grid(splits["train"], rows=8, columns=10, seed=config.seed, title=identity).savefig(workdir / "plots" / "data_samples.png", dpi=100)
    report.describe(config, builder, mesh)

    writer = tensorboardX.SummaryWriter(str(workdir / "tensorboard")) if writes else _NoWriter()
    job = stages.Job(config, workdir, writer, mesh, stopper or StopOnSignal(), evaluate_only)
    if config.method == "metadiff":
        with outcome.timed("pretrain"):
            backbone, variables = stages.pretrained_backbone(job, splits)
        with outcome.timed("features"):
            features = stages.encoded_features(job, backbone, variables, splits, identity)
        if config.metadiff.unit_scale_targets:
            features, outcome.feature_scale = feature_splits.scale_to_unit_targets(features)
            report.say(f"[features] scaled by {outcome.feature_scale:.4g} so that the train class means have unit standard deviation")
    for shots, spec in settings.episode_specs(config).items():
        plan = stages.test_episodes(job, splits, spec, shots)
        if config.method == "metadiff":
            validation = stages.validation_episodes(job, features, spec)
            stages.evaluate_rivals(job, outcome, shots, spec, features, plan, validation)
            with outcome.timed(report.stage_name("metadiff", shots)):
                stages.evaluate_metadiff(job, outcome, shots, spec, features, plan, validation)
        else:
            with outcome.timed(report.stage_name(config.method, shots)):
                stages.evaluate_baseline(job, outcome, shots, spec, splits, plan)
    for result in outcome.results:
        writer.add_scalar(f"test/{result.method}_{result.shots}shot_accuracy", result.accuracy, 0)
    writer.close()
    if evaluate_only:
        report.check_reproduced(workdir, outcome)
    elif writes:
        report.write(workdir, config, outcome, identity, mesh)
    return outcome.results
