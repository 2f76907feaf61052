"""Memory of one outer training step against the length of the inner loop: MAML and ANIL vs MetaDiff.

    python -m benchmarks.memory

Conv-4 on 28 x 28 x 1 images, 5-way 1-shot, 15 queries a class, 4 episodes a step. For MAML and ANIL
(second order) with 1, 5, 10, 20 and 50 inner steps, and for MetaDiff with T = 10, 100 and 1000: the
temporary bytes of the compiled step from XLA's memory analysis (deterministic), the peak resident memory
of a process that compiled and ran it, and the wall time per step. MetaDiff's step here includes the
frozen Conv-4 forward pass on the episode's support images (as the reference computes features inside its
loop); its T only sizes the noise schedule, because training never runs the reverse loop.
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
from metadiff_jax import backbones, denoiser, diffusion, schedule
from metadiff_jax.baselines import gradient

WAYS, SHOTS, QUERIES, EPISODES = 5, 1, 15, 4
ROWS = [("maml", n) for n in (1, 5, 10, 20, 50)] + [("anil", n) for n in (1, 5, 10, 20, 50)] + [("metadiff", t) for t in (10, 100, 1000)]


def episode_batch():
    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (EPISODES, n, 28, 28, 1), dtype=np.uint8)
    labels = lambda n: np.tile(np.repeat(np.arange(WAYS, dtype=np.int32), n), (EPISODES, 1))
    return images(WAYS * SHOTS), labels(SHOTS), images(WAYS * QUERIES), labels(QUERIES)


def build(method: str, length: int):
    """(jitted step, its arguments) for one row."""
    support_x, support_y, query_x, query_y = episode_batch()
    if method in ("maml", "anil"):
        learner = gradient.GradientMetaLearner(backbones.make_backbone("conv4"), WAYS, gradient.GradientMetaConfig(method, inner_steps=length, inner_lr=0.4))
        state = learner.init(jax.random.PRNGKey(0), jnp.asarray(support_x[0], jnp.float32))
        step = jax.jit(learner.meta_train_step, donate_argnums=0)
        return step, (state, (support_x, support_y, query_x, query_y), jax.random.PRNGKey(0))
    backbone = backbones.make_backbone("conv4")
    frozen = backbones.init_variables(backbone, jax.random.PRNGKey(0), (28, 28, 1))
    model = denoiser.make_denoiser("tcunet", 64)
    optimizer = diffusion.make_optimizer()
    train_step = diffusion.make_train_step(model, schedule.linear_schedule(length) if length > 20 else schedule.cosine_schedule(length), optimizer)

    def step(state, images, labels, targets, rng):
        features = jax.lax.stop_gradient(jax.vmap(lambda x: backbone.apply(frozen, x, train=False))(images))
        return train_step(state, diffusion.TrainBatch(features, labels, targets), rng)

    state = diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer)
    targets = np.random.default_rng(1).standard_normal((EPISODES, WAYS, 64)).astype(np.float32)
    return jax.jit(step, donate_argnums=0), (state, support_x, support_y, targets, jax.random.PRNGKey(0))


def measure(method: str, length: int) -> dict:
    step, args = build(method, length)
    analysis = step.lower(*args).compile().memory_analysis()
    state, metrics = step(*args)
    jax.block_until_ready(metrics)
    repeats = 1 if method != "metadiff" else 50
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = step(state, *args[1:])
    jax.block_until_ready(metrics)
    milliseconds = 1e3 * (time.perf_counter() - start) / repeats
    return {
        "method": method,
        "inner_steps": length,
        "compiled_temp_bytes": int(analysis.temp_size_in_bytes),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "ms_per_step": round(milliseconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", nargs=2, metavar=("METHOD", "LENGTH"), help="measure one row in this process")
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(args.row[0], int(args.row[1]))))
        return
    rows = []
    for method, length in ROWS:
        output = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--row", method, str(length)], cwd=report.ROOT, check=True, capture_output=True, text=True)
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
        "of the jitted step; `peak_rss_bytes`: the process that compiled and ran it. MAML's and ANIL's inner "
        "steps and episodes are unrolled (`GradientMetaConfig.unroll`, the default: XLA on CPU runs convolution "
        "gradients inside while loops about 8 x slower).\n\n"
        "![memory against inner steps](benchmarks/results/memory.png)",
    )


if __name__ == "__main__":
    main()
