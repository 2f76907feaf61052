"""Sampling speed: 600 test episodes x 1000 deterministic DDPM steps (the reference's protocol).

    python -m benchmarks.sampler

Compared like with like against the reference PyTorch code, timed on the same kind of 2-core machine
(docs/reference.md, "The reference code's speed, measured": commit 126fab18, random features of the
real shapes, d = 512, 5-way, 15 queries):
- batched: all 600 episodes in one call, parameters frozen: 49.9 s at 1 shot, 282.8 s at 5 shots; here,
  all 600 vmapped in one jitted call;
- as shipped: one episode a call, 617.6 s for 600 at 1 shot; here, one jitted call an episode.
Also the fraction of this machine's float32 matmul peak reached, measured in the same run (FLOPs: the
denoiser's matmuls, benchmarks.common).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import common, report
from metadiff_jax import denoiser as dn
from metadiff_jax import sampler as sp
from metadiff_jax import schedule as sl

# Seconds for 600 episodes x 1000 steps at d = 512 on a 2-core CPU, by (shots, how): docs/reference.md's table.
REFERENCE_SECONDS = {(1, "batched"): 49.9, (5, "batched"): 282.8, (1, "one episode a call"): 617.6}
EPISODES, WAYS, STEPS = 600, 5, 1000


def main() -> None:
    peak = common.matmul_peak_gflops()
    schedule = sl.linear_schedule(STEPS)
    rows = []
    for dim, shots, how in [(64, 1, "batched"), (512, 1, "batched"), (512, 5, "batched"), (640, 1, "batched"), (512, 1, "one episode a call")]:
        model = dn.make_denoiser("tcunet", dim)
        params = dn.init_params(model, jax.random.PRNGKey(0))
        sample_task = sp.make_sample_task(model, schedule, sp.SamplerConfig("ddpm_mean"))
        sample = jax.jit(lambda p, f, y, r: sp.sample_episodes(sample_task, p, f, y, r, WAYS))
        features = jax.random.normal(jax.random.PRNGKey(1), (EPISODES, WAYS * shots, dim))
        labels = jnp.tile(jnp.repeat(jnp.arange(WAYS), shots), (EPISODES, 1))
        rng = jax.random.PRNGKey(2)
        calls = [(features, labels)] if how == "batched" else [(features[i : i + 1], labels[i : i + 1]) for i in range(EPISODES)]
        run = lambda: [sample(params, f, y, rng).block_until_ready() for f, y in calls]
        sample(params, *calls[0], rng).block_until_ready()  # compile
        seconds = common.median_seconds(run, repeats=3)
        per_episode, shared = common.tcunet_matmul_flops(dim, WAYS, WAYS * shots)
        flops = STEPS * (EPISODES * per_episode + (shared if how == "batched" else EPISODES * shared))
        reference = REFERENCE_SECONDS.get((shots, how)) if dim == 512 else None
        rows.append(
            {
                "dim": dim,
                "shots": shots,
                "how": how,
                "episodes": EPISODES,
                "steps": STEPS,
                "seconds": round(seconds, 3),
                "episodes_per_s": round(EPISODES / seconds, 2),
                "reference_seconds": reference,
                "speedup_vs_reference": None if reference is None else round(reference / seconds, 1),
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
        "5-way, deterministic DDPM mean (the reference sampler), TCUNet, median of 3 runs after compilation. "
        "`reference_seconds`: the reference PyTorch code on the same kind of 2-core machine, batched against batched "
        "and one episode a call against as shipped (docs/reference.md, measured with its commit 126fab18). "
        "FLOPs: the denoiser's matmuls only. `matmul_peak_gflops_per_s`: a 2048 x 2048 float32 matmul through XLA "
        "in the same run.",
    )


if __name__ == "__main__":
    main()
