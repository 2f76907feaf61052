"""Train 3 data-parallel steps as one of two processes joined on a loopback coordinator, or as one process
alone on the same global batches; save each step's loss and gradient norm and the final parameters.

The optimizer is plain SGD: what is compared is the data-parallel gradient (each process holds half of every
global batch, and the two halves are averaged by an all-reduce whose summation order differs from one
process's), and SGD moves the parameters by that gradient times the learning rate. Adam would divide each
update by the gradient's own running size, which turns a rounding difference in a gradient near zero into a
parameter difference of up to a whole learning rate.

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
import optax  # noqa: E402

from metadiff_jax import denoiser, diffusion, schedule, synthetic, train  # noqa: E402
from metadiff_jax.data import episodes  # noqa: E402

splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=16, base_examples=40))
spec = episodes.EpisodeSpec(5, 1, 5)
targets = diffusion.class_mean_targets(splits["train"].images, splits["train"].class_starts)
model = denoiser.make_denoiser("tcunet", 16)
optimizer = optax.sgd(1e-2)
mesh = parallel.make_mesh()
step = parallel.data_parallel_step(functools.partial(diffusion.make_train_step, diffusion.make_loss(model, schedule.linear_schedule(100)), optimizer), mesh)
state = parallel.put_replicated(diffusion.init_state(denoiser.init_params(model, jax.random.PRNGKey(0)), optimizer), mesh)
# Each process samples only its own half of every global batch of 8 episodes; one process samples all 8.
stream = train.training_batches(splits["train"], targets, spec, batch_size=8, seed=0, shard_index=jax.process_index(), shard_count=jax.process_count())
losses, grad_norms = [], []
for _ in range(3):
    state, metrics = step(state, parallel.global_batch(next(stream), mesh), jax.random.PRNGKey(1))
    jax.block_until_ready(state)
    losses.append(float(parallel.host_value(metrics["loss"])))
    grad_norms.append(float(parallel.host_value(metrics["grad_norm"])))
leaves = {jax.tree_util.keystr(path): parallel.host_value(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
if jax.process_index() == 0:
    np.savez(out, losses=np.array(losses), grad_norms=np.array(grad_norms), **leaves)
print(
    json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(), "step": int(parallel.host_value(state.step))})
)
