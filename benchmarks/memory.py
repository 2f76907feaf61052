"""Memory of one outer training step against the length of the inner loop: MAML and ANIL vs MetaDiff.

    python -m benchmarks.memory

Conv-4 on 28 x 28 x 1 images, 5-way 1-shot, 15 queries a class, 4 episodes a step. For MAML and ANIL
(second order) with 1, 5, 10, 20 and 50 inner steps, and for MetaDiff with T = 10, 100 and 1000: the
temporary bytes of the compiled step from XLA's memory analysis (deterministic), the peak resident memory
of a process that compiled and ran it, and the wall time per step. MetaDiff's step here includes the
frozen Conv-4 forward pass on the episode's support images (as the reference computes features inside its
loop); its T only sizes the noise schedule, because training never runs the reverse loop.
MAML and ANIL run their inner loop as a `lax.scan` (`inner_loop: scan`, what the memory claim is about);
MAML is also measured unrolled (`GradientMetaConfig.unroll`, the main job's default on CPU, where XLA runs
convolution gradients inside loops ~8x slower) up to 20 steps: unrolled, its compile time grows with the
steps (50 steps did not compile in 8 minutes).
`metadiff_query` is MetaDiff's step with the query loss of `query_loss.py` added (T = 1000): its
`inner_steps` is K, the DDIM steps it backpropagates through, each step rematerialised (`remat`) or with its
activations stored (`stored`).
Each row runs in its own process, so that peak RSS is that row's alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import report
from metadiff_jax import backbones, denoiser, diffusion, query_loss, schedule
from metadiff_jax.baselines import gradient

WAYS, SHOTS, QUERIES, EPISODES = 5, 1, 15, 4
ROWS = (
    [("maml", "scan", n) for n in (1, 5, 10, 20, 50)]
    + [("anil", "scan", n) for n in (1, 5, 10, 20, 50)]
    + [("maml", "unrolled", n) for n in (1, 5, 10, 20)]
    + [("metadiff", "none", t) for t in (10, 100, 1000)]
    + [("metadiff_query", loop, k) for loop in ("remat", "stored") for k in (1, 10, 100, 1000)]
)


def episode_batch():
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (EPISODES, n, 28, 28, 1), dtype=np.uint8)
    labels = lambda n: np.tile(np.repeat(np.arange(WAYS, dtype=np.int32), n), (EPISODES, 1))
    return images(WAYS * SHOTS), labels(SHOTS), images(WAYS * QUERIES), labels(QUERIES)


def build(method: str, inner_loop: str, length: int):
    """(jitted step, its arguments) for one row."""
    support_x, support_y, query_x, query_y = episode_batch()
    if method in ("maml", "anil"):
        config = gradient.GradientMetaConfig(method, inner_steps=length, inner_lr=0.4, unroll=inner_loop == "unrolled")
        learner = gradient.GradientMetaLearner(backbones.make_backbone("conv4"), WAYS, config)
        state = learner.init(jax.random.PRNGKey(0), jnp.asarray(support_x[0], jnp.float32))
        step = jax.jit(learner.meta_train_step, donate_argnums=0)
        return step, (state, (support_x, support_y, query_x, query_y), jax.random.PRNGKey(0))
    backbone = backbones.make_backbone("conv4")
    frozen = backbones.init_variables(backbone, jax.random.PRNGKey(0), (28, 28, 1))
    encode = lambda images: jax.lax.stop_gradient(jax.vmap(lambda x: backbone.apply(frozen, x, train=False))(images))
    model = denoiser.make_denoiser("tcunet", 64)
    optimizer = diffusion.make_optimizer()
    state = diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer)
    targets = np.random.default_rng(1).standard_normal((EPISODES, WAYS, 64)).astype(np.float32)
    if method == "metadiff_query":
        # T = 1000; `length` is K, the DDIM steps the query loss backpropagates through.
        noise = schedule.linear_schedule(1000)
        sampled = query_loss.make_query_loss(model, noise, query_loss.QueryLossConfig(steps=length, remat=inner_loop == "remat"))
        train_step = diffusion.make_train_step(query_loss.add_query_loss(diffusion.make_loss(model, noise), sampled, 1.0), optimizer)

        def query_step(state, images, labels, query_images, query_labels, targets, rng):
            batch = diffusion.TrainBatch(encode(images), labels, targets, encode(query_images), query_labels)
            return train_step(state, batch, rng)

        return jax.jit(query_step, donate_argnums=0), (state, support_x, support_y, query_x, query_y, targets, jax.random.PRNGKey(0))
    noise = schedule.linear_schedule(length) if length > 20 else schedule.cosine_schedule(length)
    train_step = diffusion.make_train_step(diffusion.make_loss(model, noise), optimizer)

    def step(state, images, labels, targets, rng):
        return train_step(state, diffusion.TrainBatch(encode(images), labels, targets), rng)

    return jax.jit(step, donate_argnums=0), (state, support_x, support_y, targets, jax.random.PRNGKey(0))


def measure(method: str, inner_loop: str, length: int) -> dict:
    step, args = build(method, inner_loop, length)
    analysis = step.lower(*args).compile().memory_analysis()
    state, metrics = step(*args)
    jax.block_until_ready(metrics)
    repeats = 50 if method == "metadiff" else 5 if method == "metadiff_query" else 1
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = step(state, *args[1:])
    jax.block_until_ready(metrics)
    milliseconds = 1e3 * (time.perf_counter() - start) / repeats
    return {
        "method": method,
        "inner_loop": inner_loop,
        "inner_steps": length,
        "compiled_temp_bytes": int(analysis.temp_size_in_bytes),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "ms_per_step": round(milliseconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", nargs=3, metavar=("METHOD", "INNER_LOOP", "LENGTH"), help="measure one row in this process")
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.row[0], args.row[1], int(args.row[2]))))
        return
    rows = []
    for method, inner_loop, length in ROWS:
        command = [sys.executable, "-m", "benchmarks.memory", "--row", method, inner_loop, str(length)]
        output = subprocess.run(command, cwd=report.ROOT, check=True, capture_output=True, text=True)
        rows.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    from metadiff_jax import plots

    figure = plots.memory_against_steps(rows)
    figure.savefig(report.ROOT / "benchmarks" / "results" / "memory.png", dpi=110)
    report.publish(
        "memory",
        rows,
        "Memory against inner-loop length",
        "Conv-4, 28 x 28 x 1, 5-way 1-shot, 15 queries a class, 4 episodes a step, one outer step. For MAML and ANIL "
        "`inner_steps` is the inner loop's length (second order); for MetaDiff it is T, the number of diffusion "
        "steps (the step includes the frozen Conv-4 forward pass). `compiled_temp_bytes`: XLA's memory analysis "
        "of the jitted step; `peak_rss_bytes`: the process that compiled and ran it. `inner_loop`: `scan` runs "
        "MAML's and ANIL's inner steps and episodes as `lax.scan` loops; `unrolled` as straight-line code "
        "(`GradientMetaConfig.unroll`, the main job's default: XLA on CPU runs convolution gradients inside "
        "loops about 8 x slower; unrolled, 50 steps did not compile in 8 minutes, so its rows stop at 20). "
        "`metadiff_query`: MetaDiff's step plus the query loss backpropagated through K = `inner_steps` DDIM "
        "steps of the sampler (`query_loss.py`, T = 1000), each step under `jax.checkpoint` (`remat`) or not "
        "(`stored`).\n\n"
        "![memory against inner steps](benchmarks/results/memory.png)",
    )


if __name__ == "__main__":
    main()
