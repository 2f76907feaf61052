"""Run in a subprocess with 8 fake CPU devices: training and evaluation on 1 device vs on 8, in both
parallel styles (jit with shardings, and the per-device shard_map program with lax.pmean).

Prints one JSON line: per style, the largest parameter difference from the 1-device run after training, and
whether the accuracies match.
"""

import functools
import json

import jax

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402

from metadiff_jax import denoiser, diffusion, evaluate, parallel, sampler, schedule, synthetic, train  # noqa: E402
from metadiff_jax.data import episodes  # noqa: E402

splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=32, base_examples=40, novel_examples=20))
spec = episodes.EpisodeSpec(5, 1, 5)
model = denoiser.make_denoiser("tcunet", 32)
noise = schedule.linear_schedule(100)
optimizer = diffusion.make_optimizer(1e-3)
targets = diffusion.class_mean_targets(splits["train"].images, splits["train"].class_starts)
params = denoiser.init_params(model, jax.random.PRNGKey(0))
make_step = functools.partial(diffusion.make_train_step, diffusion.make_loss(model, noise), optimizer, ema_decay=0.9, ema_start=2)
test, _ = evaluate.fixed_episodes(splits["test"], spec, 20, seed=0)


def train_and_evaluate(devices, style):
    mesh = parallel.make_mesh(devices)
    step = parallel.data_parallel_step(make_step, mesh, style)
    state = parallel.put_replicated(diffusion.init_state(params, optimizer), mesh)
    batches = train.training_batches(splits["train"], targets, spec, batch_size=16, seed=0)
    for _ in range(5):
        batch = parallel.put_sharded(next(batches), mesh)
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        # One step in flight at a time: with more fake devices than cores, several can deadlock an all-reduce.
        jax.block_until_ready(state)
    evaluate_fn = evaluate.make_evaluator(sampler.make_sample_task(model, noise, sampler.SamplerConfig("ddim", 10)), 5, model.dim, chunk=12, mesh=mesh)
    accuracies = evaluate_fn(state.ema_params, test, jax.random.PRNGKey(2))[0]
    return jax.device_get(state), accuracies, len(batch.support_features.sharding.device_set), float(metrics["loss"])


one_device, one_device_accuracies, _, one_device_loss = train_and_evaluate(jax.devices()[:1], "jit")
report = {"devices": len(jax.devices()), "one_device_steps": int(one_device.step)}
for style in parallel.STYLES:
    state, accuracies, span, loss = train_and_evaluate(jax.devices(), style)
    differences = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), one_device.params, state.params)
    report[style] = {
        "steps": int(state.step),
        "batch_devices": span,
        "max_param_difference": max(jax.tree_util.tree_leaves(differences)),
        "loss_difference": abs(loss - one_device_loss),
        "accuracies_equal": bool(np.array_equal(accuracies, one_device_accuracies)),
    }
print(json.dumps(report))
