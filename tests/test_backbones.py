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


def test_max_pool_matches_flax_max_pool_in_value_and_gradient_under_jit_and_vmap():
    import flax.linen as nn

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 7, 9, 5))  # odd sizes: the last row and column dropped
    x = x.at[0, 0, :2, :2].set(0.0)  # a window of ties: the gradient goes to one of them, as select-and-scatter's
    weights = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 3, 4, 5))
    ours = lambda x: jnp.sum(jnp.sin(jax.vmap(bb.max_pool_2x2)(x)) * weights)
    flax = lambda x: jnp.sum(jnp.sin(jax.vmap(lambda e: nn.max_pool(e, (2, 2), strides=(2, 2)))(x)) * weights)
    np.testing.assert_array_equal(jax.vmap(bb.max_pool_2x2)(x), jax.vmap(lambda e: nn.max_pool(e, (2, 2), strides=(2, 2)))(x))
    np.testing.assert_allclose(jax.jit(jax.grad(ours))(x), jax.grad(flax)(x), rtol=1e-6, atol=1e-7)
    assert int(jnp.sum(jax.grad(ours)(x)[0, 0, :2, :2, 0] != 0)) == 1


@pytest.mark.parametrize("name, shape", [("conv4", (28, 28, 1)), ("resnet12", (20, 20, 3))])
def test_patch_convolution_and_bfloat16_compute_the_same_network_from_the_same_parameters(name, shape):
    kwargs = {"width": 8} if name == "resnet12" else {}
    xla, patches = (bb.make_backbone(name, convolution=c, **kwargs) for c in ("xla", "patches"))
    variables = bb.init_variables(xla, jax.random.PRNGKey(0), shape)
    assert jax.tree_util.tree_structure(bb.init_variables(patches, jax.random.PRNGKey(0), shape)) == jax.tree_util.tree_structure(variables)
    images = jax.random.randint(jax.random.PRNGKey(1), (6, *shape), 0, 256).astype(jnp.uint8)
    reference = xla.apply(variables, images, train=False)
    np.testing.assert_allclose(patches.apply(variables, images, train=False), reference, rtol=1e-4, atol=1e-5)
    # A batch-norm network's gradient (train mode) through both convolutions, jitted: the same up to rounding.
    loss = lambda model: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(model.apply({**variables, "params": p}, images, train=True, mutable=["batch_stats"])[0]))))
    expected, got = (jax.tree_util.tree_leaves(loss(model)(variables["params"])) for model in (xla, patches))
    # Up to float32 rounding of the largest gradient; a bias before batch norm has a zero gradient, noise here.
    scale = max(float(jnp.abs(a).max()) for a in expected)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)
    half = bb.make_backbone(name, dtype="bfloat16", **kwargs)
    features = half.apply(variables, images, train=False)
    assert features.dtype == jnp.float32  # parameters float32, computed in bf16 (8 significant bits), returned float32
    scale = float(jnp.abs(reference).max())
    assert 0 < float(jnp.abs(features - reference).max()) < 0.05 * scale


def test_unknown_dtype_and_convolution_are_named():
    with pytest.raises(ValueError, match="Unknown backbone dtype 'float16'; known: float32, bfloat16"):
        bb.make_backbone("conv4", dtype="float16")
    with pytest.raises(ValueError, match="Unknown convolution 'fft'; known: auto, xla, patches, patches_in_training"):
        bb.make_backbone("conv4", convolution="fft")
    assert bb.resolve_convolution("auto") == ("patches_in_training" if jax.default_backend() == "cpu" else "xla")


def test_patches_in_training_trains_as_patches_and_encodes_as_xla():
    """The CPU default: the training pass (the gradient's) through patches, encoding through XLA's convolution."""
    models = {c: bb.make_backbone("conv4", width=8, convolution=c) for c in bb.CONVOLUTIONS}
    variables = bb.init_variables(models["xla"], jax.random.PRNGKey(0), (28, 28, 1))
    images = jax.random.randint(jax.random.PRNGKey(1), (4, 28, 28, 1), 0, 256).astype(jnp.uint8)
    encode = {c: jax.jit(lambda v, x, m=m: m.apply(v, x, train=False)) for c, m in models.items()}
    train = {c: jax.jit(lambda v, x, m=m: m.apply(v, x, train=True, mutable=["batch_stats"])[0]) for c, m in models.items()}
    mixed = "patches_in_training"
    np.testing.assert_array_equal(encode[mixed](variables, images), encode["xla"](variables, images))
    np.testing.assert_array_equal(train[mixed](variables, images), train["patches"](variables, images))
    # Which program each pass compiles to: XLA's convolution op in encoding only.
    convolves = lambda fn: "conv_general_dilated" in str(jax.make_jaxpr(fn)(variables, images))
    assert convolves(encode[mixed]) and not convolves(train[mixed]) and not convolves(encode["patches"])
