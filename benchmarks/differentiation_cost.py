"""What differentiating through the sampler costs: one query-loss gradient against K, beside the diffusion loss.

    python -m benchmarks.differentiation_cost

The default's denoiser (configs/default.py: TCUNet, anchored at the prototypes and seeing them, T = 1000) on
64-dimensional features (Conv-4's, random values: the cost does not depend on them), a batch of 8 episodes
(the default's outer batch), 5-way 1-shot, 15 queries a class. Each row is the gradient with respect to the
denoiser's parameters of either
  diffusion_loss  MetaDiff's training loss: one random timestep per episode, no sampling (its cost does not
                  depend on K; the paper's memory argument), or
  query_loss      the cosine classifier's cross-entropy on the query set with the weights sampled by K steps
                  of `sampler` from noise (query_loss.py), each step rematerialised (`remat`: the backward
                  pass keeps the carried weights only) or with its activations stored (`stored`), through all
                  K steps or, truncated, through the last `backprop_steps` only.
Measured: `compiled_temp_bytes` (XLA's memory analysis of the jitted gradient), `peak_rss_bytes` (the process
that compiled and ran that row alone) and `ms_per_gradient` (median of 5 runs after compiling).
`matmul_gflops` is this machine's 2048^3 float32 matmul rate, measured once beside the rows (this VM's
speed varies 2-3x from day to day).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import jax

from benchmarks import common, report
from launch import settings
from metadiff_jax import denoiser as denoiser_lib
from metadiff_jax import diffusion, query_loss

DIM, EPISODES, WAYS, QUERIES = 64, 8, 5, 15
LENGTHS = (1, 10, 100, 1000)
ROWS = (
    [("diffusion_loss", "none", "-", 0, None)]
    + [("query_loss", sampler, loop, k, None) for sampler in ("ddpm_mean", "ddpm", "ddim", "linear") for loop in ("remat", "stored") for k in LENGTHS]
    + [("query_loss", "ddpm_mean", loop, 1000, tracked) for loop in ("remat", "stored") for tracked in (1, 10, 100)]
)


def gradient_of(loss: str, sampler: str, loop: str, steps: int, backprop_steps: int | None):
    """(jitted gradient function, its arguments) for one row."""
    from configs import default

    config = default.get_config()
    model = settings.make_denoiser(config, DIM)
    noise = settings.noise_schedule(config)
    params = denoiser_lib.init_params(model, jax.random.PRNGKey(0))
    batch = common.random_train_batch(EPISODES, DIM, WAYS, queries=QUERIES)
    if loss == "diffusion_loss":
        diffusion_loss = diffusion.make_loss(model, noise)
        return jax.jit(jax.grad(lambda p, rng: diffusion_loss(p, batch, rng, 0)[0])), (params, jax.random.PRNGKey(0))
    loss_config = query_loss.QueryLossConfig(1.0, sampler, steps, remat=loop == "remat", backprop_steps=backprop_steps, start="noise")
    sampled = query_loss.make_query_loss(model, noise, loss_config)
    arrays = (batch.support_features, batch.support_labels, batch.query_features, batch.query_labels)
    return jax.jit(jax.grad(lambda p, rng: sampled(p, *arrays, rng, WAYS))), (params, jax.random.PRNGKey(0))


def measure(loss: str, sampler: str, loop: str, steps: int, backprop_steps: int | None) -> dict:
    gradient, args = gradient_of(loss, sampler, loop, steps, backprop_steps)
    analysis = gradient.lower(*args).compile().memory_analysis()
    jax.block_until_ready(gradient(*args))
    seconds = common.median_seconds(lambda: jax.block_until_ready(gradient(*args)), 5)
    return {
        "loss": loss,
        "sampler": sampler,
        "activations": loop,
        "steps_K": steps,
        "backprop_steps": backprop_steps or steps,
        "compiled_temp_bytes": int(analysis.temp_size_in_bytes),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "ms_per_gradient": round(1e3 * seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", nargs=5, metavar=("LOSS", "SAMPLER", "ACTIVATIONS", "K", "BACKPROP_STEPS"), help="measure one row in this process")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="the K of the full rows (a shorter list for a quick look)")
    args = parser.parse_args()
    if args.row:
        loss, sampler, loop, steps, tracked = args.row
        print(json.dumps(measure(loss, sampler, loop, int(steps), None if tracked == "all" else int(tracked))))
        return
    lengths = {int(k) for k in args.lengths.split(",")}
    gflops = round(common.matmul_peak_gflops(), 1)
    rows = []
    for loss, sampler, loop, steps, tracked in ROWS:
        if loss == "query_loss" and steps not in lengths:
            continue
        row = [loss, sampler, loop, str(steps), "all" if tracked is None else str(tracked)]
        command = [sys.executable, "-m", "benchmarks.differentiation_cost", "--row", *row]
        output = subprocess.run(command, cwd=report.ROOT, check=True, capture_output=True, text=True)
        rows.append({**json.loads(output.stdout.strip().splitlines()[-1]), "matmul_gflops": gflops})
        print(rows[-1], flush=True)
    diffusion_bytes = rows[0]["compiled_temp_bytes"]
    for row in rows:
        row["temp_bytes_x_diffusion"] = round(row["compiled_temp_bytes"] / diffusion_bytes, 1)
    report.publish(
        "differentiation_cost",
        rows,
        "What differentiating through the sampler costs",
        f"`python -m benchmarks.differentiation_cost --lengths {args.lengths}`. One gradient with respect to the denoiser's "
        "parameters: the default's denoiser (TCUNet, T = 1000) on 64-dimensional random features, 8 episodes, 5-way 1-shot, "
        "15 queries a class. `diffusion_loss`: MetaDiff's training loss (no sampling). `query_loss`: the cosine classifier's "
        "cross-entropy on the queries with weights sampled by K = `steps_K` steps of `sampler` from noise, backpropagated "
        "through the last `backprop_steps` of them, each step rematerialised (`remat`) or with its activations stored "
        "(`stored`). `compiled_temp_bytes`: XLA's memory analysis of the jitted gradient (`temp_bytes_x_diffusion`: over the "
        "diffusion loss's); `peak_rss_bytes`: the process that compiled and ran that row alone; `ms_per_gradient`: median of "
        "5 after compiling; `matmul_gflops`: this machine's 2048^3 float32 matmul rate, measured once beside them.",
    )


if __name__ == "__main__":
    main()
