"""Sampling speed: 600 test episodes x 1000 deterministic DDPM steps (the reference's protocol), vmapped.

    python -m benchmarks.sampler

The reference PyTorch code samples one episode at a time: 1.12 s per episode of 1000 steps on a 2-core
machine like this one (measured 2026-11-26), i.e. 0.89 episodes/s and about 670 s for 600 episodes.
Targets: <= 34 s at d = 512 (20x the reference's episodes/s) and >= 50% of the machine's float32 matmul
peak, measured in the same run. FLOPs counted are the denoiser's matmuls (benchmarks.common).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import common, report
from metadiff_jax import denoiser as dn
from metadiff_jax import sampler as sp
from metadiff_jax import schedule as sl

REFERENCE_SECONDS_PER_EPISODE = 1.12
EPISODES, WAYS, SHOTS, STEPS = 600, 5, 1, 1000


def main() -> None:
    peak = common.matmul_peak_gflops()
    schedule = sl.linear_schedule(STEPS)
    rows = []
    for dim in (64, 512, 640):
        model = dn.make_denoiser("tcunet", dim)
        params = dn.init_params(model, jax.random.PRNGKey(0))
        sample_task = sp.make_sample_task(model, schedule, sp.SamplerConfig("ddpm_mean"))
        sample = jax.jit(lambda p, f, y, r: sp.sample_episodes(sample_task, p, f, y, r, WAYS))
        features = jax.random.normal(jax.random.PRNGKey(1), (EPISODES, WAYS * SHOTS, dim))
        labels = jnp.tile(jnp.repeat(jnp.arange(WAYS), SHOTS), (EPISODES, 1))
        rng = jax.random.PRNGKey(2)
        sample(params, features, labels, rng).block_until_ready()  # compile
        seconds = common.median_seconds(lambda: sample(params, features, labels, rng).block_until_ready(), repeats=3)
        per_episode, shared = common.tcunet_matmul_flops(dim, WAYS, WAYS * SHOTS)
        flops = STEPS * (EPISODES * per_episode + shared)
        rows.append(
            {
                "dim": dim,
                "episodes": EPISODES,
                "steps": STEPS,
                "seconds": round(seconds, 3),
                "episodes_per_s": round(EPISODES / seconds, 2),
                "speedup_vs_reference": round(EPISODES / seconds * REFERENCE_SECONDS_PER_EPISODE, 1),
                "achieved_gflops_per_s": round(flops / seconds / 1e9, 1),
                "matmul_peak_gflops_per_s": round(peak, 1),
                "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3),
            }
        )
        print(rows[-1], flush=True)
    report.publish(
        "sampler",
        rows,
        "Sampling: 600 episodes x 1000 DDPM steps",
        "5-way 1-shot, deterministic DDPM mean (the reference sampler), TCUNet, all episodes vmapped in one jitted "
        "call, median of 3 runs after compilation. `speedup_vs_reference` is against the reference PyTorch code's "
        "1.12 s per episode on a 2-core machine like this one. FLOPs: the denoiser's matmuls only. "
        "`matmul_peak_gflops_per_s`: a 2048 x 2048 float32 matmul through XLA in the same run.",
    )


if __name__ == "__main__":
    main()
