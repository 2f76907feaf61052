"""The query-loss training mode on a GPU: MetaDiff's outer step plus the query loss through K
DDIM steps, each step rematerialised (`jax.checkpoint`) or with its activations stored, at the paper's
feature size d = 640 (ResNet-12 wide), 8 episodes of 5-way 1-shot with 15 queries a class, T = 1000.

    python -m benchmarks.gpu_query_loss

Needs only jax, flax, optax and this package: features are random arrays of the real shapes. Rows give the
compiled step's temporary bytes (XLA's memory analysis on the device) and milliseconds per step, with
MetaDiff's own step (no query loss) as the first row.
"""

from __future__ import annotations

import jax

from benchmarks import common, report
from metadiff_jax import denoiser, diffusion, query_loss, schedule

DIM, WAYS, QUERIES, BATCH = 640, 5, 15, 8


def row(inner_loop: str, steps: int, dim: int = DIM, repeats: int = 3) -> dict:
    model = denoiser.make_denoiser("tcunet", dim)
    noise = schedule.linear_schedule(1000)
    optimizer = diffusion.make_optimizer()
    loss_fn = diffusion.make_loss(model, noise)
    if inner_loop != "none":
        sampled = query_loss.make_query_loss(model, noise, query_loss.QueryLossConfig(steps=steps, remat=inner_loop == "remat"))
        loss_fn = query_loss.add_query_loss(loss_fn, sampled, 1.0)
    step = diffusion.jit_train_step(diffusion.make_train_step(loss_fn, optimizer))
    state = diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer)
    batch = jax.device_put(common.random_train_batch(BATCH, dim, WAYS, queries=QUERIES))
    key = jax.random.PRNGKey(1)
    analysis = step.lower(state, batch, key).compile().memory_analysis()
    state, _ = step(state, batch, key)
    seconds, state = common.seconds_per_step(step, state, (batch, key), steps=20, repeats=repeats)
    result = {
        "query_loss": inner_loop,
        "sampler_steps": steps,
        "compiled_temp_bytes": int(analysis.temp_size_in_bytes),
        "ms_per_step": round(1e3 * seconds, 3),
    }
    print(result, flush=True)
    return result


def rows(dim: int = DIM, sampler_steps=(10, 100, 1000), repeats: int = 3, inner_loops=("remat", "stored")) -> list[dict]:
    """MetaDiff's own step, then the query-loss step through K sampler steps, remat and stored, for each K."""
    return [row("none", 0, dim, repeats)] + [row(loop, k, dim, repeats) for loop in inner_loops for k in sampler_steps]


def main() -> None:
    report.publish(
        "gpu_query_loss",
        rows(),
        "GPU: the query loss through K sampler steps, with and without rematerialisation",
        "d = 640, 8 episodes of 5-way 1-shot with 15 queries a class, T = 1000, TCUNet, Adam + EMA; `none` is "
        "MetaDiff's own step. `remat`: `jax.checkpoint` on each DDIM step; `stored`: activations kept for the "
        "backward pass. Random features of the real shapes; median of 3 runs of 20 steps after compilation.",
    )


if __name__ == "__main__":
    main()
