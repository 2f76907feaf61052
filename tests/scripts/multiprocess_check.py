"""One of two processes joined on a loopback coordinator: train 3 data-parallel steps, print the params' sum.

Usage: python multiprocess_check.py PROCESS_ID PORT
"""

import functools
import json
import sys

from metadiff_jax import parallel

process_id, port = int(sys.argv[1]), sys.argv[2]
parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from metadiff_jax import denoiser, diffusion, schedule, synthetic, train  # noqa: E402
from metadiff_jax.data import episodes  # noqa: E402

splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=16, base_examples=40))
spec = episodes.EpisodeSpec(5, 1, 5)
targets = diffusion.class_mean_targets(splits["train"].images, splits["train"].class_starts)
model = denoiser.make_denoiser("tcunet", 16)
optimizer = diffusion.make_optimizer(1e-3)
mesh = parallel.make_mesh()
step = parallel.data_parallel_step(functools.partial(diffusion.make_train_step, model, schedule.linear_schedule(100), optimizer), mesh)
state = parallel.put_replicated(diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer), mesh)
stream = train.training_batches(splits["train"], targets, spec, batch_size=8, seed=0, shard_index=jax.process_index(), shard_count=jax.process_count())
for _ in range(3):
    state, metrics = step(state, parallel.global_batch(next(stream), mesh), jax.random.PRNGKey(1))
    jax.block_until_ready(state)
leaves = [np.asarray(leaf.addressable_data(0)) for leaf in jax.tree_util.tree_leaves(state.params)]
print(
    json.dumps(
        {
            "process": jax.process_index(),
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "step": int(state.step.addressable_data(0)),
            "checksum": float(sum(leaf.astype(np.float64).sum() for leaf in leaves)),
        }
    )
)
