"""Data parallelism over a ('data',) device mesh: episodes sharded, parameters replicated, plain jit.

The outer step is the same pure function on one CPU or many devices, in one of two styles: jit with
shardings lets XLA split the episode axis across devices and insert the all-reduce itself; shard_map runs
the step written for one device's slice with explicit lax.pmean (a pmapped step, in current JAX). Which
devices (and so how many), and which style, is configuration, not code.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def mesh_from_config(device_count: int) -> Mesh:
    """The mesh a config asks for: 0 means every device of every process, N > 0 the first N (one process only)."""
    available = jax.device_count()
    if device_count == 0:
        return make_mesh()
    if device_count < 0 or device_count > available:
        raise ValueError(f"parallel.devices is {device_count}, but {available} devices are visible; use 0 (all) or 1..{available}.")
    if jax.process_count() > 1 and device_count != available:
        raise ValueError(
            f"parallel.devices is {device_count} in a {jax.process_count()}-process run; a multi-host mesh spans every "
            f"device of every process: use 0 (all {available})."
        )
    return make_mesh(jax.devices()[:device_count])


def is_main_process() -> bool:
    """Process 0 of a multi-host run (always true on one host): the one that writes logs, plots and results."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier of this name (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def host_value(leaf) -> np.ndarray:
    """A numpy copy of an array that every process holds whole (replicated, or local to one device)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return np.asarray(leaf.addressable_data(0))  # replicated: every shard is the whole array
    return np.asarray(leaf)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def sharded(mesh: Mesh) -> NamedSharding:
    """Leading (episode) axis split across the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def fake_cpu_devices(mesh: Mesh | None) -> bool:
    """Whether the mesh holds several CPU devices in one process (jax_num_cpu_devices): they outnumber the
    cores, and several steps in flight can deadlock an all-reduce, so loops wait for each step."""
    return mesh is not None and mesh.size > jax.process_count() and mesh.devices.flat[0].platform == "cpu"


def check_divisible(count: int, mesh: Mesh, what: str = "episodes per step") -> None:
    if count % mesh.size:
        raise ValueError(f"{count} {what} cannot be split evenly over {mesh.size} devices; use a multiple of {mesh.size}.")


STYLES = ("jit", "shard_map")


def check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"Unknown parallel style {style!r}; known: {', '.join(STYLES)}.")


def data_parallel_step(make_step, mesh: Mesh, style: str = "jit"):
    """The outer step over the mesh: state replicated, the batch's episodes sharded, the state donated.

    `make_step(axis_name=...)` builds the step (e.g. functools.partial(diffusion.make_train_step, ...)).
    style "jit": the step written for the whole batch (axis_name None), jitted with shardings; XLA splits
    the episode axis and inserts the all-reduce. style "shard_map": the step written for one device's slice
    of the episodes (axis_name DATA_AXIS), which averages loss, gradients and health flag itself with
    lax.pmean; what a pmapped step is, in current JAX. Both compute the same update.
    """
    check_style(style)
    if style == "jit":
        return jax.jit(
            make_step(axis_name=None),
            in_shardings=(replicated(mesh), sharded(mesh), replicated(mesh)),
            out_shardings=(replicated(mesh), replicated(mesh)),
            donate_argnums=0,
        )
    per_device = jax.shard_map(
        make_step(axis_name=DATA_AXIS),
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS), PartitionSpec()),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )
    return jax.jit(per_device, donate_argnums=0)


def _place(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    # From a value every process holds whole; unlike device_put, this also builds arrays spanning hosts.
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def put_replicated(tree, mesh: Mesh):
    """Every leaf (held whole by every process) replicated on every device of the mesh."""
    return jax.tree_util.tree_map(lambda leaf: _place(host_value(leaf), replicated(mesh)), tree)


def put_sharded(tree, mesh: Mesh):
    """Every leaf (held whole by every process) with its leading axis split over the mesh (evenly)."""
    leaves = jax.tree_util.tree_leaves(tree)
    check_divisible(len(leaves[0]), mesh)
    return jax.tree_util.tree_map(lambda leaf: _place(np.asarray(leaf), sharded(mesh)), tree)


def pad_to_multiple(arrays: tuple, multiple: int) -> tuple[tuple, int]:
    """Pads the leading axis of every array (repeating the last row) to a multiple; returns (arrays, count)."""
    count = len(arrays[0])
    extra = (-count) % multiple
    if not extra:
        return arrays, count
    return tuple(np.concatenate([a, np.repeat(np.asarray(a)[-1:], extra, axis=0)]) for a in arrays), count


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Joins the processes of a multi-host run (jax.distributed.initialize) before any other JAX call.

    With no arguments JAX detects the cluster itself (TPU pods, Slurm); otherwise give all three (e.g. a
    coordinator at "10.0.0.1:1234"). CPU processes exchange collectives through gloo.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address is None and num_processes is None and process_id is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)


def process_rows(global_count: int) -> slice:
    """The rows of a global batch of `global_count` that this process reads (contiguous, in process order)."""
    processes = jax.process_count()
    if global_count % processes:
        raise ValueError(f"A batch of {global_count} cannot be split evenly over {processes} processes; use a multiple of {processes}.")
    local = global_count // processes
    return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def global_batch(local_batch, mesh: Mesh):
    """One global array per leaf from each process's slice of the batch (its episodes, in process order).

    Each host samples only its own episodes (data.episodes.episode_batches with shard_index =
    jax.process_index(), shard_count = jax.process_count()), so no host loads another's data.
    """
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharded(mesh), np.asarray(a)), local_batch)
