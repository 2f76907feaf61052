"""Run in a subprocess with 8 fake CPU devices: the image-level stages on 1 device vs on 8.

Pretraining steps (jit with shardings: batch norm over the global batch), an encoding pass, and the outer
steps of ProtoNet and MAML in both parallel styles, each on the same global batch; the image learners'
per-episode test accuracies. Prints one JSON line of largest differences from the 1-device results.
"""

import functools
import json

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from metadiff_jax import backbones, evaluate, parallel, pretrain  # noqa: E402
from metadiff_jax.baselines import gradient, protonet  # noqa: E402

IMAGE_SHAPE = (16, 16, 1)
rng = np.random.default_rng(0)
backbone = backbones.make_backbone("conv4", width=4)
one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh(jax.devices())


def largest_difference(a, b) -> float:
    return max(
        float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def host(tree):
    return jax.tree_util.tree_map(parallel.host_value, tree)


def pretraining(mesh, steps=3, batch=32):
    config = pretrain.PretrainConfig(batch_size=batch, rotation=True)
    model = pretrain.Classifier(backbone, 10, rotation=True)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE_SHAPE)), train=False)
    optimizer = pretrain.make_optimizer(config, 100)
    state = pretrain.PretrainState(jnp.zeros((), jnp.int32), variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
    step = pretrain.make_train_step(model, optimizer, config, mesh)
    initial = state.params
    state = parallel.put_replicated(state, mesh)
    data = np.random.default_rng(1)
    losses = []
    for _ in range(steps):
        images = data.integers(0, 256, (batch, *IMAGE_SHAPE), dtype=np.uint8)
        labels = data.integers(0, 10, (batch,), dtype=np.int32)
        state, metrics = step(state, parallel.global_batch((images, labels), mesh), jax.random.PRNGKey(2))
        jax.block_until_ready(state)
        losses.append(float(parallel.host_value(metrics["loss"])))
    state = host(state)
    return state, losses, largest_difference(initial, state.params)


def image_episodes(count, ways=5, shots=1, queries=3):
    support = rng.integers(0, 256, (count, ways * shots, *IMAGE_SHAPE), dtype=np.uint8)
    query = rng.integers(0, 256, (count, ways * queries, *IMAGE_SHAPE), dtype=np.uint8)
    labels = lambda n: np.tile(np.repeat(np.arange(ways, dtype=np.int32), n), (count, 1))
    return support, labels(shots), query, labels(queries)


train_batch = image_episodes(8)
test_episodes = image_episodes(11)  # not a multiple of 8: the last group is padded


def learner_run(learner, mesh, style, steps=2):
    # Plain SGD in place of Adam: the parameters' difference is then the learning rate times the gradients'
    # (Adam's first steps divide by |g|, turning rounding in near-zero gradients into learning-rate-sized steps).
    learner.optimizer = optax.sgd(0.1)
    state = learner.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE_SHAPE)))
    initial = state.params
    make_step = lambda axis_name=None: functools.partial(learner.meta_train_step, axis_name=axis_name)
    step = parallel.data_parallel_step(make_step, mesh, style)
    state = parallel.put_replicated(state, mesh)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, parallel.global_batch(train_batch, mesh), jax.random.PRNGKey(0))
        jax.block_until_ready(state)
        losses.append(float(parallel.host_value(metrics["loss"])))
    state = host(state)
    return state, losses, largest_difference(initial, state.params)


report = {"devices": len(jax.devices())}
reference_state, reference_losses, update = pretraining(one)
state, losses, _ = pretraining(eight)
report["pretrain"] = {
    "steps": int(state.step),
    "max_update": update,
    "max_param_difference": largest_difference(reference_state.params, state.params),
    "max_batch_stats_difference": largest_difference(reference_state.batch_stats, state.batch_stats),
    "max_loss_difference": max(abs(a - b) for a, b in zip(reference_losses, losses)),
}
backbone_variables = {"params": reference_state.params["backbone"], "batch_stats": reference_state.batch_stats["backbone"]}
images = rng.integers(0, 256, (37, *IMAGE_SHAPE), dtype=np.uint8)
alone = pretrain.make_encoder(backbone, batch_size=16)(backbone_variables, images)
sharded = pretrain.make_encoder(backbone, batch_size=16, mesh=eight)(backbone_variables, images)
report["encode"] = {"shape": list(sharded.shape), "max_feature_difference": float(np.abs(alone - sharded).max()), "feature_scale": float(np.abs(alone).max())}
learners = {
    "protonet": protonet.ProtoNetLearner(backbone, 5),
    "maml": gradient.GradientMetaLearner(backbone, 5, gradient.GradientMetaConfig("maml", inner_steps=1, unroll=False)),
}
for name, learner in learners.items():
    reference_state, reference_losses, update = learner_run(learner, one, "jit")
    reference_accuracies = evaluate.image_episode_accuracies(learner.query_accuracy, reference_state, test_episodes, progress=False)
    for style in parallel.STYLES:
        state, losses, _ = learner_run(learner, eight, style)
        report[f"{name}_{style}"] = {
            "steps": int(state.step),
            "max_update": update,
            "max_param_difference": largest_difference(reference_state.params, state.params),
            "max_loss_difference": max(abs(a - b) for a, b in zip(reference_losses, losses)),
        }
    accuracies = evaluate.image_episode_accuracies(learner.query_accuracy, reference_state, test_episodes, progress=False, mesh=eight)
    report[f"{name}_evaluation"] = {"episodes": len(accuracies), "accuracies_equal": bool(np.array_equal(reference_accuracies, accuracies))}
print(json.dumps(report))
