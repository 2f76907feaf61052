"""Timings on a GPU: MetaDiff's outer step at growing global batches, sampling 600 episodes x 1000 steps,
and a ResNet-12 pretraining step on 84 x 84 images.

    python -m benchmarks.gpu

Needs only jax, flax, optax and this package (no dataset): inputs are random arrays of the real shapes.
Writes three sections of BENCHMARKS.md (gpu_train_step, gpu_sampler, gpu_pretrain).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import common, report
from metadiff_jax import backbones, denoiser, diffusion, pretrain, sampler, schedule


def train_step_rows(dims=(512, 640), batches=(8, 64, 512, 4096), steps: int = 200) -> list[dict]:
    rows = []
    noise = schedule.linear_schedule(1000)
    for dim in dims:
        model = denoiser.make_denoiser("tcunet", dim)
        optimizer = diffusion.make_optimizer()
        step = diffusion.jit_train_step(diffusion.make_train_step(diffusion.make_loss(model, noise), optimizer))
        for batch in batches:
            state = diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer)
            data = jax.tree_util.tree_map(jnp.asarray, common.random_train_batch(batch, dim))
            key = jax.random.PRNGKey(1)
            state, _ = step(state, data, key)
            seconds, state = common.seconds_per_step(step, state, (data, key), steps)
            rows.append({"dim": dim, "batch": batch, "ms_per_step": round(1e3 * seconds, 3), "episodes_per_s": round(batch / seconds, 1)})
            print(rows[-1], flush=True)
    return rows


def sampler_rows(dims=(512, 640), counts=(600, 6000), timesteps: int = 1000) -> list[dict]:
    rows = []
    noise = schedule.linear_schedule(timesteps)
    for dim in dims:
        model = denoiser.make_denoiser("tcunet", dim)
        params = denoiser.init_params(model, jax.random.PRNGKey(0))
        task = sampler.make_sample_task(model, noise, sampler.SamplerConfig("ddpm_mean"))
        sample = jax.jit(lambda p, f, y, r: sampler.sample_episodes(task, p, f, y, r, 5))
        for episodes in counts:
            features = jax.random.normal(jax.random.PRNGKey(1), (episodes, 5, dim))
            labels = jnp.tile(jnp.arange(5), (episodes, 1))
            sample(params, features, labels, jax.random.PRNGKey(2)).block_until_ready()
            seconds = common.median_seconds(lambda: sample(params, features, labels, jax.random.PRNGKey(2)).block_until_ready(), repeats=3)
            rows.append({"dim": dim, "episodes": episodes, "steps": timesteps, "seconds": round(seconds, 3), "episodes_per_s": round(episodes / seconds, 1)})
            print(rows[-1], flush=True)
    return rows


def pretrain_rows(
    names=("resnet12", "resnet12_wide"), batch: int = 128, size: int = 84, steps: int = 30, width: int = 0, dtypes=("float32", "bfloat16")
) -> list[dict]:
    """A pretraining step's time per backbone and compute dtype (parameters and optimizer state float32)."""
    rows = []
    for name in names:
        for dtype in dtypes:
            config = pretrain.PretrainConfig(epochs=1, batch_size=batch, flip=True, shift=8)
            seconds = common.pretrain_step_seconds(backbones.make_backbone(name, width, dtype), config, (size, size, 3), 64, steps)
            rows.append(
                {
                    "backbone": name,
                    "dtype": dtype,
                    "image_size": size,
                    "batch": batch,
                    "ms_per_step": round(1e3 * seconds, 2),
                    "images_per_s": round(batch / seconds, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    note = "Random inputs of the real shapes; median of 3 runs after compilation."
    report.publish(
        "gpu_train_step",
        train_step_rows(),
        "GPU: MetaDiff outer step against the global batch",
        "5-way 1-shot, TCUNet, T = 1000, Adam + EMA + NaN guard. " + note,
        module="benchmarks.gpu",
    )
    report.publish(
        "gpu_sampler",
        sampler_rows(),
        "GPU: sampling episodes x 1000 DDPM steps",
        "5-way 1-shot, deterministic DDPM mean, all episodes vmapped in one call. " + note,
        module="benchmarks.gpu",
    )
    report.publish(
        "gpu_pretrain",
        pretrain_rows(),
        "GPU: ResNet-12 pretraining step, 84 x 84, batch 128",
        "64 classes (miniImageNet's base set), SGD Nesterov, on-device shift and flip. " + note,
        module="benchmarks.gpu",
    )


if __name__ == "__main__":
    main()
