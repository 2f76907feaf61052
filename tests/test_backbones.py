import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadiff_jax import backbones as bb
from metadiff_jax import denoiser as dn


def resnet12_params(widths, channels=3):
    total, previous = 0, channels
    for width in widths:
        total += 9 * previous * width + 2 * 9 * width * width + previous * width  # three 3x3 convs and the 1x1 shortcut
        total += 4 * 2 * width  # four batch norms: scale and bias
        previous = width
    return total


@pytest.mark.parametrize(
    "name, shape, params, dim",
    [
        ("conv4", (28, 28, 1), 111_936, 64),
        ("conv4", (84, 84, 3), 113_088, 1600),
        ("resnet12", (84, 84, 3), resnet12_params((64, 128, 256, 512)), 512),
        ("resnet12_wide", (84, 84, 3), resnet12_params((64, 160, 320, 640)), 640),
    ],
)
def test_parameter_counts_and_feature_dims(name, shape, params, dim):
    backbone = bb.make_backbone(name)
    variables = jax.eval_shape(lambda: bb.init_variables(backbone, jax.random.PRNGKey(0), shape))
    assert dn.count_params(variables["params"]) == params
    assert bb.feature_dim(backbone, shape) == dim


def test_wide_resnet12_is_the_usual_12_4m():
    assert resnet12_params((64, 160, 320, 640)) == 12_424_320


def test_conv4_forward_on_uint8_and_batch_norm_statistics():
    backbone = bb.make_backbone("conv4")
    variables = bb.init_variables(backbone, jax.random.PRNGKey(0), (28, 28, 1))
    images = jax.random.randint(jax.random.PRNGKey(1), (6, 28, 28, 1), 0, 256).astype(jnp.uint8)
    features = backbone.apply(variables, images, train=False)
    assert features.shape == (6, 64) and bool(jnp.all(features >= 0))
    _, updates = backbone.apply(variables, images, train=True, mutable=["batch_stats"])
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"], variables["batch_stats"])
    assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_resnet12_last_block_has_no_activation_and_dropblock_only_trains():
    backbone = bb.ResNet12(widths=(8, 8, 8, 8), drop_rate=0.5, drop_block_size=2)
    variables = bb.init_variables(backbone, jax.random.PRNGKey(0), (32, 32, 3))
    images = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3))
    features = backbone.apply(variables, images, train=False)
    assert features.shape == (4, 8) and bool(jnp.any(features < 0))  # no LeakyReLU after the last block...
    again = backbone.apply(variables, images, train=False)
    np.testing.assert_array_equal(features, again)
    trained = [
        backbone.apply(variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(k)})[0]
        for k in range(2)
    ]
    assert float(jnp.abs(trained[0] - trained[1]).max()) > 0  # ...and DropBlock is random in training only


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="Unknown backbone 'vit'; known: conv4, resnet12, resnet12_wide"):
        bb.make_backbone("vit")
