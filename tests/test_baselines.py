import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import synthetic
from metadiff_jax.baselines import gradient, protonet
from metadiff_jax.data import episodes as episodes_lib

SPEC = episodes_lib.EpisodeSpec(5, 1, 5)


class TinyNet(nn.Module):
    """A small MLP backbone over feature vectors: fast enough to meta-train in a test."""

    width: int = 32

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.relu(nn.Dense(self.width)(x))


@pytest.fixture(scope="module")
def splits():
    return synthetic.make_splits(synthetic.SyntheticConfig(dim=16, rank=4, noise_scale=1.0, base_examples=60, novel_examples=20))


def batch(split, seed, count):
    e = episodes_lib.sample_episodes(split, SPEC, seed, np.arange(count))
    return tuple(jnp.asarray(a) for a in (e.support_images, e.support_labels, e.query_images, e.query_labels))


def make(method):
    if method == "protonet":
        return protonet.ProtoNetLearner(TinyNet(), 5, learning_rate=3e-3)
    return gradient.GradientMetaLearner(TinyNet(), 5, gradient.GradientMetaConfig(method, inner_steps=3, inner_lr=0.5, outer_lr=3e-3))


@pytest.mark.parametrize("method", ["maml", "fomaml", "anil", "metasgd", "protonet"])
def test_each_baseline_learns_a_tiny_task(splits, method):
    learner = make(method)
    state = learner.init(jax.random.PRNGKey(0), batch(splits["train"], 0, 1)[0][0])
    step = jax.jit(learner.meta_train_step)
    test = batch(splits["test"], 99, 200)
    accuracy = jax.jit(jax.vmap(learner.query_accuracy, in_axes=(None, 0, 0, 0, 0)))
    before = float(accuracy(state, *test).mean())
    for i in range(150):
        state, _ = step(state, batch(splits["train"], i + 1, 4))
    after = float(accuracy(state, *test).mean())
    assert after > 0.4 and after > before + 0.05, (before, after)  # 5-way: chance is 0.2


def _outer_loss(learner, state, episode):
    return lambda p: learner.meta_loss(p, state.batch_stats, tuple(a[None] for a in episode))[0]


def test_maml_second_order_gradient_matches_finite_differences(splits):
    with jax.enable_x64(True):
        learner = gradient.GradientMetaLearner(TinyNet(width=4), 5, gradient.GradientMetaConfig("maml", inner_steps=2, inner_lr=0.5))
        episode = tuple(a[0] for a in batch(splits["train"], 3, 1))
        episode = (episode[0].astype(jnp.float64), episode[1], episode[2].astype(jnp.float64), episode[3])
        state = learner.init(jax.random.PRNGKey(1), episode[0])
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64) if p is not None else None, state.params)
        loss = _outer_loss(learner, state, episode)
        grads = jax.grad(loss)(params)
        kernel = params["params"]["backbone"]["Dense_0"]["kernel"]
        for index in [(0, 0), (3, 2), (7, 1)]:
            bump = lambda h: jax.tree_util.tree_map(
                lambda x: x,
                {
                    **params,
                    "params": {**params["params"], "backbone": {"Dense_0": {**params["params"]["backbone"]["Dense_0"], "kernel": kernel.at[index].add(h)}}},
                },
            )
            numeric = (loss(bump(1e-6)) - loss(bump(-1e-6))) / 2e-6
            np.testing.assert_allclose(grads["params"]["backbone"]["Dense_0"]["kernel"][index], numeric, rtol=1e-4, atol=1e-8)


def test_first_order_maml_drops_the_second_order_terms(splits):
    episode = tuple(a[0] for a in batch(splits["train"], 3, 1))
    grads = {}
    for method in ("maml", "fomaml"):
        learner = gradient.GradientMetaLearner(TinyNet(width=4), 5, gradient.GradientMetaConfig(method, inner_steps=2, inner_lr=0.5))
        state = learner.init(jax.random.PRNGKey(1), episode[0])
        grads[method] = jax.grad(_outer_loss(learner, state, episode))(state.params)["params"]["backbone"]["Dense_0"]["kernel"]
    assert float(jnp.abs(grads["maml"] - grads["fomaml"]).max()) > 1e-4
    # Both point roughly the same way: first order approximates, it does not reverse.
    cosine = jnp.sum(grads["maml"] * grads["fomaml"]) / (jnp.linalg.norm(grads["maml"]) * jnp.linalg.norm(grads["fomaml"]))
    assert float(cosine) > 0.5


def test_anil_adapts_only_the_head(splits):
    learner = make("anil")
    episode = tuple(a[0] for a in batch(splits["train"], 3, 1))
    state = learner.init(jax.random.PRNGKey(0), episode[0])
    adapted = learner.adapt(state, episode[0], episode[1])
    np.testing.assert_array_equal(adapted["backbone"]["Dense_0"]["kernel"], state.params["params"]["backbone"]["Dense_0"]["kernel"])
    assert float(jnp.abs(adapted["head"]["kernel"] - state.params["params"]["head"]["kernel"]).max()) > 0


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="Unknown gradient-based method 'reptile'"):
        gradient.GradientMetaConfig("reptile")


class BatchNormNet(nn.Module):
    """A backbone with batch norm, whose outputs depend on the batch it sees (as Conv-4's do)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))


@pytest.mark.parametrize("method", ["maml", "protonet"])
def test_non_transductive_evaluation_classifies_each_query_alone(splits, method):
    def learner(transductive):
        if method == "protonet":
            return protonet.ProtoNetLearner(BatchNormNet(), 5, transductive=transductive)
        return gradient.GradientMetaLearner(BatchNormNet(), 5, gradient.GradientMetaConfig(method, inner_steps=2, inner_lr=0.5, transductive=transductive))

    support_x, support_y, query_x, query_y = (a[0] for a in batch(splits["test"], 7, 1))
    state = learner(True).init(jax.random.PRNGKey(0), support_x)
    # Half of the queries replaced by loud noise: with batch statistics shared across queries they would
    # move every query's normalisation; classified alone, each query's answer is its own.
    queries = query_x.at[::2].set(jax.random.normal(jax.random.PRNGKey(1), query_x[::2].shape) * 50.0)

    def accuracies(learn):
        whole = float(learn.query_accuracy(state, support_x, support_y, queries, query_y))
        alone = np.mean([float(learn.query_accuracy(state, support_x, support_y, queries[i : i + 1], query_y[i : i + 1])) for i in range(len(queries))])
        return whole, alone

    whole, alone = accuracies(learner(False))
    assert whole == pytest.approx(alone)
    whole, alone = accuracies(learner(True))
    assert whole != pytest.approx(alone)  # transductive: a query alone in its batch is normalised to nothing
