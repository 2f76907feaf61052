"""The workdir and the run record: one folder per run, its config in run.json, refused if it holds another run.

A run is identified by its config: rerunning the same command in the same workdir resumes it, another
config there is refused before anything is written. In a multi-host run the workdir must be one folder
that every host sees.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform

import jax
import numpy as np
from jax.experimental import multihost_utils

from launch import provenance
from launch.errors import UsageError
from metadiff_jax import config_dict, parallel

PACKAGES = ("jax", "jaxlib", "flax", "optax", "chex", "orbax-checkpoint", "tensorflow-datasets", "numpy", "kanjivg")


def prepare_workdir(path: str) -> pathlib.Path:
    workdir = pathlib.Path(path)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test_{os.getpid()}"  # one per process: the processes of a multi-host run probe the same folder at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"Cannot write to workdir {workdir} ({error.strerror}); pass a folder you can write to with --workdir.") from error
    return workdir


def write_text(path: pathlib.Path, text: str) -> None:
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


# Keys added to the project after runs were made, whose default is not what those runs did: a run record
# without the key gets this value, the behaviour it was made with (names as the record has them).
BEHAVIOUR_BEFORE_THE_KEY = {"metadiff.anchor": "zero"}
# Keys added since, whose default changed what a run does: a record without one ran as this value says.
ADDED_WITH_NEW_BEHAVIOUR = {"rivals.regressor.patience": None}
# Keys moved since runs were made: old dotted name -> the new names that take its value. The denoiser's
# fields moved into a section per denoiser (both denoisers read the old shared anchor and prediction), the
# rivals' settings into a section per rival.
RENAMED_KEYS = {
    "metadiff.condition": ("metadiff.tcunet.condition",),
    "metadiff.anchor": ("metadiff.tcunet.anchor", "metadiff.episode_transformer.anchor"),
    "metadiff.prediction": ("metadiff.tcunet.prediction", "metadiff.episode_transformer.prediction"),
    "metadiff.width": ("metadiff.tcunet.width",),
    "metadiff.depth": ("metadiff.tcunet.depth",),
    "rivals.finetune_steps": ("rivals.finetuned.steps",),
    "rivals.finetune_learning_rates": ("rivals.finetuned.learning_rates",),
    "rivals.ridge_draws_per_class": ("rivals.ridge.draws_per_class",),
    "rivals.ridge_strengths": ("rivals.ridge.strengths",),
    "rivals.anil_inner_lrs": ("rivals.anil.inner_lrs",),
    "rivals.anil_inner_steps": ("rivals.anil.inner_steps",),
    "rivals.anil_outer_lr": ("rivals.anil.outer_lr",),
    "rivals.anil_steps": ("rivals.anil.steps",),
    "rivals.anil_meta_batch": ("rivals.anil.meta_batch",),
}


def migrate_record(recorded: dict) -> dict:
    """A recorded config (run.json's) with the keys of its time brought to today's names and behaviour."""
    recorded = json.loads(json.dumps(recorded))
    if "tcunet" not in recorded.get("metadiff", {"tcunet": None}):
        for key, value in BEHAVIOUR_BEFORE_THE_KEY.items():
            section, name = key.split(".")
            recorded[section].setdefault(name, value)
    for old, new_names in RENAMED_KEYS.items():
        section, name = old.split(".")
        if name not in recorded.get(section, {}):
            continue
        value = recorded[section].pop(name)
        for new in new_names:
            *path, leaf = new.split(".")
            node = recorded
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value
    for key, value in ADDED_WITH_NEW_BEHAVIOUR.items():
        section, *path, leaf = key.split(".")
        if section not in recorded:
            continue
        node = recorded[section]
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault(leaf, value)
    return recorded


def read_run_record(workdir: pathlib.Path):
    """The config recorded in workdir/run.json (None where there is none), in today's keys (migrate_record),
    with keys added to the project since the run was made filled with their defaults."""
    from configs import default

    record = workdir / "run.json"
    if not record.is_file():
        return None
    try:
        recorded = migrate_record(json.loads(record.read_text())["config"])
        config = default.get_config()
        config.update(recorded)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UsageError(f"{record} is not a run record ({type(error).__name__}: {error}); use a new --workdir.") from error
    return config


def check_run_identity(workdir: pathlib.Path, config) -> None:
    """Refuses a workdir that holds another run (a different config), before anything is written to it. Other
    code is no other run: the run resumes, with a warning that its stages were made by two code versions."""
    from launch.report import say  # launch.report imports this module

    recorded = read_run_record(workdir)
    if recorded is None:
        return
    previous = json.loads(recorded.to_json())
    current = json.loads(config.to_json())
    if previous != current:
        differing = config_dict.differing_keys(previous, current)
        raise UsageError(
            f"{workdir} holds another run: its config differs at {', '.join(differing)}. Nothing was changed. "
            "Use a new --workdir, or delete this one to start over."
        )
    started_by = json.loads((workdir / "run.json").read_text()).get("code_version", provenance.NOT_RECORDED)
    today = provenance.this_process()["code_version"]
    if started_by != today:
        say(f"[workdir] warning: {workdir} was started by code version {started_by}, today's is {today}: the stages done earlier stay as that code made them")


def record_run(workdir: pathlib.Path, config) -> None:
    """run.json: the config, when the run started, and the commit and code version that started it."""
    record = workdir / "run.json"
    if not record.exists():
        started = datetime.datetime.now().isoformat(timespec="seconds")
        write_text(record, json.dumps({"config": json.loads(config.to_json()), "started": started, **provenance.made_by(config)}, indent=2))


def recorded_config(workdir: pathlib.Path):
    """The config a finished run was made with, from its run.json."""
    config = read_run_record(workdir)
    if config is None:
        raise UsageError(f"{workdir} holds no run (no run.json); `eval` evaluates a finished run: pass its --workdir.")
    return config


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
