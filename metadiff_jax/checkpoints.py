"""Checkpoints, in one place: the finished stages' saves and the training loop's CheckpointManager.

Two kinds of save, both orbax, both written from host numpy copies (with several processes orbax then
writes each array once, whether it was replicated over a multi-host mesh or computed on every process):
- a finished stage (a pretrained backbone, a trained denoiser): `save_tree` writes one tree and waits for
  the commit, `is_saved` says whether a stage is done, `restore_tree` reads it back;
- a training loop in progress: `checkpoint_manager` keeps the last N saves of a "record" (state, rng,
  losses) every `CheckpointPolicy.every` steps, asynchronously on one host, with metadata describing what
  the run was made from; `restore_latest` resumes from the newest, checked first.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from metadiff_jax import config_dict, parallel


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    directory: str  # absolute path of the CheckpointManager's folder
    every: int = 1000  # steps between saves
    keep: int = 3  # most recent checkpoints kept
    metadata: dict | None = None  # what the checkpoints were made from; a resume with other metadata is refused

    def __post_init__(self):
        config_dict.check_counts(self, "every", "keep")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from: damaged, or made for another configuration."""


def save_tree(path: pathlib.Path, tree) -> None:
    """Writes a finished stage's tree and waits for it: a stage counts as done only once its save committed."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, jax.tree_util.tree_map(parallel.host_value, tree))
    checkpointer.wait_until_finished()


def restore_tree(path: pathlib.Path, abstract):
    """Restores a tree written by save_tree into host numpy arrays shaped like `abstract`."""
    target = jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)
    return ocp.StandardCheckpointer().restore(path, target)


def is_saved(path: pathlib.Path) -> bool:
    """Whether save_tree finished writing `path` (orbax marks a committed save)."""
    return (path / "commit_success.txt").exists() or (path / "_CHECKPOINT_METADATA").exists()


# Entries sized by the run's length: a run resumed with more steps than it was started with keeps them.
GROWABLE = ("losses", "validation", "history")


def _leaf_shapes(tree) -> dict[str, tuple]:
    # Path names without their container type: orbax stores NamedTuples (the train and optimizer states) as dicts.
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): (tuple(leaf.shape), np.dtype(leaf.dtype))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


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
    differing = sorted(_differences(saved, expected))
    if differing:
        raise CheckpointError(
            f"checkpoints in {manager.directory} were made from another {', '.join(differing[:5])} than this run's "
            f"(saved with one, run with the other); resuming from them would silently change the run. Use a new "
            "workdir, or delete that folder to start this stage over."
        )


def _differences(saved: dict, expected: dict, prefix: str = ""):
    """Dotted names of the entries where two nested dicts differ (a key missing on one side differs)."""
    for key in set(saved) | set(expected):
        a, b = saved.get(key), expected.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}"


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
        raise CheckpointError(
            f"checkpoint {where} cannot be read ({type(error).__name__}: {error}). It is damaged: delete {where} to resume from the checkpoint before it."
        ) from error
    expected = _leaf_shapes(template)
    growable = {name for name in expected if name.endswith(GROWABLE)}
    if saved.keys() != expected.keys():
        differing = sorted(saved.keys() ^ expected.keys())[:3]
        raise CheckpointError(
            f"checkpoint {where} holds another model (entries {', '.join(differing)} differ); it was made with another config. Use a new workdir."
        )
    for name, (shape, dtype) in expected.items():
        if (saved[name][0] != shape and name not in growable) or saved[name][1] != dtype:
            raise CheckpointError(
                f"checkpoint {where} holds {name} of shape {saved[name][0]} and dtype {saved[name][1]}, but this config needs "
                f"{shape} {dtype}; it was made with another config. Use a new workdir."
            )
    shapes = {name: saved[name][0] if name in growable else shape for name, (shape, _) in expected.items()}
    target = jax.tree_util.tree_map_with_path(lambda path, leaf: np.zeros(shapes[jax.tree_util.keystr(path, simple=True, separator="/")], leaf.dtype), template)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(record=ocp.args.StandardRestore(target)))["record"]
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {where} cannot be read ({type(error).__name__}: {error}). It is damaged: delete {where} to resume from the checkpoint before it."
        ) from error
    return restored, step


def restore_best(directory: str, template):
    """The item the training loop kept in `<directory>_best` (best validation accuracy), and its step."""
    manager = checkpoint_manager(directory + "_best")
    try:
        restored = restore_latest(manager, template)
    finally:
        manager.close()
    if restored is None:
        raise CheckpointError(f"{directory}_best holds no checkpoint: the run was made without validation (checkpoint.validation_episodes = 0).")
    return restored
