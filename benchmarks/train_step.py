"""Outer training step speed: one jitted step (loss, gradient, Adam, EMA, divergence guard), state donated.

    python -m benchmarks.train_step

The reference PyTorch code's step (forward, backward and Adam, 8 episodes, 5-way 5-shot, d = 512), timed
on the same kind of 2-core machine: 9.0 ms median, 6.2 to 11.7 ms (docs/reference.md, "The
reference code's speed, measured", its commit 126fab18). The 5-shot rows at d = 512, batch 8, are the like
for like.
`ms_per_step_with_sampling` runs the same steps fed by the episode sampler (class-mean targets, a
background prefetch thread) over random class-grouped features, so sampling cost would show there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common, report
from metadiff_jax import denoiser as dn
from metadiff_jax import diffusion as df
from metadiff_jax import schedule as sl
from metadiff_jax import train
from metadiff_jax.data import datasets, episodes

WAYS, QUERIES, STEPS = 5, 15, 300
REFERENCE_MS = {(512, 8, 5): 9.0}  # (dim, batch, shots) -> the reference's median ms a step, docs/reference.md


def main() -> None:
    schedule = sl.linear_schedule(1000)
    rows = []
    for dim, batch, shots in [(64, 8, 1), (512, 8, 1), (512, 8, 5), (640, 8, 1), (512, 64, 1)]:
        spec = episodes.EpisodeSpec(WAYS, shots, QUERIES)
        model = dn.make_denoiser("tcunet", dim)
        optimizer = df.make_optimizer()
        step = df.jit_train_step(df.make_train_step(df.make_loss(model, schedule), optimizer))
        state = df.init_state(dn.init_params(model, jax.random.PRNGKey(0)), optimizer)
        rng = jax.random.PRNGKey(1)
        features = np.random.default_rng(0).standard_normal((64 * 600, dim)).astype(np.float32)
        split = datasets.ClassIndexedSplit(features, np.arange(65, dtype=np.int64) * 600, "random/train")
        targets = df.class_mean_targets(split.images, split.class_starts)
        fixed = next(train.training_batches(split, targets, spec, batch, seed=0))
        fixed = jax.tree_util.tree_map(jnp.asarray, fixed)

        def run_sampled():
            nonlocal state
            stream = episodes.prefetch(train.training_batches(split, targets, spec, batch, seed=0))
            for _ in range(STEPS):
                state, metrics = step(state, next(stream), rng)
            jax.block_until_ready(state)

        state, _ = step(state, fixed, rng)  # compile
        fixed_seconds, state = common.seconds_per_step(step, state, (fixed, rng), STEPS, repeats=5)
        fixed_ms = 1e3 * fixed_seconds
        sampled_ms = 1e3 * common.median_seconds(run_sampled) / STEPS
        reference = REFERENCE_MS.get((dim, batch, shots))
        rows.append(
            {
                "dim": dim,
                "batch": batch,
                "shots": shots,
                "ms_per_step": round(fixed_ms, 3),
                "ms_per_step_with_sampling": round(sampled_ms, 3),
                "reference_ms_per_step": reference,
                "speedup_vs_reference": None if reference is None else round(reference / fixed_ms, 1),
            }
        )
        print(rows[-1], flush=True)
    report.publish(
        "train_step",
        rows,
        "Outer training step",
        f"5-way, TCUNet, T = 1000, Adam + L2 5e-4 + EMA + NaN guard, median of 5 runs of {STEPS} steps. "
        "`reference_ms_per_step`: the reference PyTorch code's step at d = 512, batch 8, 5 shots, on the same kind of "
        "2-core machine, median of its runs (docs/reference.md, commit 126fab18).",
    )


if __name__ == "__main__":
    main()
