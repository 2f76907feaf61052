"""Feature extractors: Conv-4 and ResNet-12 (standard and wide), by name.

Every backbone takes uint8 or float images `(batch, H, W, C)` (uint8 is scaled to [0, 1]) and returns
features `(batch, dim)`; call with `train=True` and `mutable=["batch_stats"]` (and a "dropout" rng where
DropBlock is on) to train, `train=False` to encode.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here), which the reference recipes assume.
_batch_norm = lambda train: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


def _as_float(images):
    return images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images


class Conv4(nn.Module):
    """4 x [conv 3x3 (64 channels), batch norm, ReLU, max-pool 2], flattened (64-d at 28 x 28, 1600 at 84)."""

    channels: int = 64

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = _as_float(images)
        for _ in range(4):
            x = nn.Conv(self.channels, (3, 3), padding="SAME")(x)
            x = nn.relu(_batch_norm(train)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x.reshape(x.shape[0], -1)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drops block_size x block_size squares, rescaling what is kept."""

    rate: float
    block_size: int

    @nn.compact
    def __call__(self, x, train: bool):
        if not train or self.rate == 0.0:
            return x
        height, width = x.shape[1], x.shape[2]
        block = min(self.block_size, height, width)
        valid = max(1, (height - block + 1) * (width - block + 1))
        gamma = self.rate * height * width / (block * block * valid)
        seeds = jax.random.bernoulli(self.make_rng("dropout"), gamma, x.shape).astype(x.dtype)
        dropped = nn.max_pool(seeds, (block, block), strides=(1, 1), padding="SAME")
        keep = 1.0 - dropped
        return x * keep * (keep.size / jnp.maximum(keep.sum(), 1.0))


class ResidualBlock(nn.Module):
    """3 x conv 3x3 with batch norm (LeakyReLU 0.1 between), a 1x1 shortcut, max-pool 2."""

    channels: int
    activate_output: bool = True
    drop_rate: float = 0.0
    drop_block_size: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        conv = lambda k: nn.Conv(self.channels, (k, k), padding="SAME", use_bias=False)
        out = nn.leaky_relu(_batch_norm(train)(conv(3)(x)), 0.1)
        out = nn.leaky_relu(_batch_norm(train)(conv(3)(out)), 0.1)
        out = _batch_norm(train)(conv(3)(out))
        out = out + _batch_norm(train)(conv(1)(x))
        if self.activate_output:
            out = nn.leaky_relu(out, 0.1)
        out = nn.max_pool(out, (2, 2), strides=(2, 2))
        return DropBlock(self.drop_rate, self.drop_block_size)(out, train)


class ResNet12(nn.Module):
    """ResNet-12: four residual blocks, no activation after the last one, global average pooling."""

    widths: Sequence[int] = (64, 128, 256, 512)
    drop_rate: float = 0.0  # DropBlock rate in the last two blocks (0: off)
    drop_block_size: int = 5

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = _as_float(images)
        last = len(self.widths) - 1
        for index, width in enumerate(self.widths):
            rate = self.drop_rate if index >= last - 1 else 0.0
            size = self.drop_block_size if index == last else 1
            x = ResidualBlock(width, activate_output=index < last, drop_rate=rate, drop_block_size=size)(x, train)
        return x.mean(axis=(1, 2))


def _resnet12(stages: tuple[float, ...]):
    """ResNet-12 whose stage widths are `stages` times the first stage's `width` (64 by default)."""
    return lambda width=64, **kw: ResNet12(widths=tuple(int(round(width * s)) for s in stages), **kw)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "conv4": lambda width=64, **kw: Conv4(channels=width, **kw),
    "resnet12": _resnet12((1, 2, 4, 8)),  # 64-128-256-512, the MetaDiff reference's
    "resnet12_wide": _resnet12((1, 2.5, 5, 10)),  # 64-160-320-640, MetaOptNet's
}


def make_backbone(name: str, width: int = 0, **kwargs) -> nn.Module:
    """Backbone `name`; `width` (0: the standard 64) sets its first stage's channels, the later ones scale."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}.")
    if width:
        kwargs["width"] = width
    return BACKBONES[name](**kwargs)


def init_variables(backbone: nn.Module, rng, image_shape: tuple[int, ...]):
    """params and batch_stats for images of `image_shape` (H, W, C)."""
    return backbone.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def feature_dim(backbone: nn.Module, image_shape: tuple[int, ...]) -> int:
    shapes = jax.eval_shape(lambda: backbone.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False)[0])
    return int(shapes.shape[-1])
