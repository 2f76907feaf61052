"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def median_seconds(run, repeats: int = 5) -> float:
    """Median wall time of `run()` (which must block until its result is ready) over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def seconds_per_step(step, state, args: tuple, steps: int, repeats: int = 3, wait_each: bool = False):
    """Median seconds per call of `state, _ = step(state, *args)` over `repeats` runs of `steps` calls.

    Returns (seconds, final state): the state is donated to each call, so the caller must continue from it.
    `wait_each` blocks after every call instead of once per run.
    """

    def run():
        nonlocal state
        for _ in range(steps):
            state, _ = step(state, *args)
            if wait_each:
                jax.block_until_ready(state)
        jax.block_until_ready(state)

    return median_seconds(run, repeats) / steps, state


def random_train_batch(batch: int, dim: int, ways: int = 5, seed: int = 0, queries: int = 0):
    """A MetaDiff TrainBatch of the real shapes (5-way 1-shot) with random features and targets, and with
    `queries` random query features a class (for the query-loss training mode) when not 0."""
    from metadiff_jax import diffusion

    rng = np.random.default_rng(seed)
    support = rng.standard_normal((batch, ways, dim)).astype(np.float32)
    targets = rng.standard_normal((batch, ways, dim)).astype(np.float32)
    query_features = query_labels = None
    if queries:
        query_features = rng.standard_normal((batch, ways * queries, dim)).astype(np.float32)
        query_labels = np.tile(np.repeat(np.arange(ways, dtype=np.int32), queries), (batch, 1))
    return diffusion.TrainBatch(support, np.tile(np.arange(ways, dtype=np.int32), (batch, 1)), targets, query_features, query_labels)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate through XLA: the best of `repeats` size x size products."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best = min(median_seconds(lambda: product(a).block_until_ready(), 1) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def tcunet_matmul_flops(dim: int, ways: int, support: int, time_dim: int = 320) -> tuple[int, int]:
    """(per-episode, per-step shared) matmul FLOPs of one TCUNet call.

    Per episode: the five row layers on `ways` rows and the support gradient's class sums. Shared by all
    episodes at one step (t is the same): the time-embedding projections, computed once per step.
    """
    wide, narrow = dim // 2, dim // 4
    rows = dim * wide + wide * narrow + narrow * narrow + narrow * wide + wide * dim
    per_episode = 2 * ways * rows + 2 * ways * support * dim
    shared = 2 * (time_dim * time_dim // 2 + time_dim // 2 + time_dim * (wide + narrow + narrow + wide + dim))
    return per_episode, shared


def pretrain_step_seconds(backbone, config, image_shape: tuple[int, int, int], classes: int, steps: int) -> float:
    """Median seconds of one pretraining step (pretrain.make_train_step) of `backbone` + a `classes`-way head
    on random uint8 images of `image_shape`, batch config.batch_size, after compilation."""
    from metadiff_jax import pretrain

    model = pretrain.Classifier(backbone, classes)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False)
    optimizer = pretrain.make_optimizer(config, 1000)
    state = pretrain.PretrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
    step = pretrain.make_train_step(model, optimizer, config)
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (config.batch_size, *image_shape), dtype=np.uint8))
    labels = jnp.arange(config.batch_size, dtype=jnp.int32) % classes
    key = jax.random.PRNGKey(1)
    state, _ = step(state, (images, labels), key)
    seconds, _ = seconds_per_step(step, state, ((images, labels), key), steps)
    return seconds
