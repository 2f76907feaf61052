"""Run in a subprocess with 8 fake CPU devices: training and evaluation on 1 device vs on 8.

Prints one JSON line: the largest parameter difference after training and whether the accuracies match.
"""

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
step_fn = diffusion.make_train_step(model, noise, optimizer, ema_decay=0.9, ema_start=2)
test, _ = evaluate.fixed_episodes(splits["test"], spec, 20, seed=0)

finals, accuracies, spans = [], [], []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    step = parallel.data_parallel_step(step_fn, mesh)
    state = parallel.put_replicated(diffusion.init_state(params, optimizer), mesh)
    batches = train.training_batches(splits["train"], targets, spec, batch_size=16, seed=0)
    for _ in range(5):
        batch = parallel.put_sharded(next(batches), mesh)
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        # One step in flight at a time: with more fake devices than cores, several can deadlock an all-reduce.
        jax.block_until_ready(state)
    spans.append(len(batch.support_features.sharding.device_set))
    finals.append(jax.device_get(state))
    evaluate_fn = evaluate.make_evaluator(model, noise, sampler.SamplerConfig("ddim", 10), 5, chunk=12, mesh=mesh)
    accuracies.append(evaluate_fn(state.ema_params, test, jax.random.PRNGKey(2))[0])

differences = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), finals[0].params, finals[1].params)
print(json.dumps({
    "devices": len(jax.devices()),
    "max_param_difference": max(jax.tree_util.tree_leaves(differences)),
    "steps": [int(f.step) for f in finals],
    "batch_devices": spans,
    "accuracies_equal": bool(np.array_equal(accuracies[0], accuracies[1])),
    "accuracy_max_difference": float(np.abs(accuracies[0] - accuracies[1]).max()),
}))
