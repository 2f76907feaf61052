"""Data parallelism over a ('data',) device mesh: episodes sharded, parameters replicated, plain jit.

The outer step is the same pure function on one CPU or many devices: jit with shardings lets XLA split the
episode axis across devices and insert the all-reduce that a pmapped step would write as lax.pmean. Which
devices (and so how many) is configuration, not code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every process)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices, (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def sharded(mesh: Mesh) -> NamedSharding:
    """Leading (episode) axis split across the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_divisible(count: int, mesh: Mesh, what: str = "episodes per step") -> None:
    if count % mesh.size:
        raise ValueError(f"{count} {what} cannot be split evenly over {mesh.size} devices; use a multiple of {mesh.size}.")


def data_parallel_step(step_fn, mesh: Mesh):
    """jit of step_fn(state, batch, rng) with the state replicated and the batch's episodes sharded.

    The state is donated, as in the single-device step.
    """
    return jax.jit(
        step_fn,
        in_shardings=(replicated(mesh), sharded(mesh), replicated(mesh)),
        out_shardings=(replicated(mesh), replicated(mesh)),
        donate_argnums=0,
    )


def put_replicated(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))


def put_sharded(tree, mesh: Mesh):
    """Places every leaf with its leading axis split over the mesh (its length must divide evenly)."""
    leaves = jax.tree_util.tree_leaves(tree)
    check_divisible(len(leaves[0]), mesh)
    return jax.device_put(jax.tree_util.tree_map(jnp.asarray, tree), sharded(mesh))


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


def global_batch(local_batch, mesh: Mesh):
    """One global array per leaf from each process's slice of the batch (its episodes, in process order).

    Each host samples only its own episodes (data.episodes.episode_batches with shard_index =
    jax.process_index(), shard_count = jax.process_count()), so no host loads another's data.
    """
    return jax.tree_util.tree_map(lambda a: jax.make_array_from_process_local_data(sharded(mesh), np.asarray(a)), local_batch)
