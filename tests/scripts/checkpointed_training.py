"""Trains on synthetic features saving a checkpoint every step, until killed. Usage: checkpointed_training.py DIR"""

import sys

import jax

from metadiff_jax import checkpoints, denoiser, schedule, synthetic, train
from metadiff_jax.data import episodes

splits = synthetic.make_splits(synthetic.SyntheticConfig(dim=64, base_examples=30))
model = denoiser.make_denoiser("tcunet", 64)
config = train.TrainConfig(steps=100_000, batch_size=4, check_every=1000)
print("training", flush=True)
train.train_denoiser(
    model, schedule.linear_schedule(50), denoiser.init_params(model, jax.random.PRNGKey(0)), splits["train"], episodes.EpisodeSpec(5, 1, 5), config,
    progress=False, checkpoints=checkpoints.CheckpointPolicy(sys.argv[1], every=1, keep=2),
)
