"""Train 3 data-parallel steps as one of two processes joined on a loopback coordinator, or as one process
alone on the same global batches; save the final parameters.

Usage: python multiprocess_check.py OUT.npz PROCESS_ID PORT    (one of two processes)
       python multiprocess_check.py OUT.npz                    (one process: the reference)
"""

import functools
import json
import sys

from metadiff_jax import parallel

out = sys.argv[1]
if len(sys.argv) > 2:
    parallel.initialize_distributed(f"127.0.0.1:{sys.argv[3]}", num_processes=2, process_id=int(sys.argv[2]))

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
# Each process samples only its own half of every global batch of 8 episodes; one process samples all 8.
stream = train.training_batches(splits["train"], targets, spec, batch_size=8, seed=0, shard_index=jax.process_index(), shard_count=jax.process_count())
for _ in range(3):
    state, metrics = step(state, parallel.global_batch(next(stream), mesh), jax.random.PRNGKey(1))
    jax.block_until_ready(state)
leaves = {jax.tree_util.keystr(path): parallel.host_value(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
if jax.process_index() == 0:
    np.savez(out, **leaves)
print(
    json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(), "step": int(parallel.host_value(state.step))})
)
