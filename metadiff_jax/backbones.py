"""Feature extractors: Conv-4 and ResNet-12 (standard and wide), by name.

Every backbone takes uint8 or float images `(batch, H, W, C)` (uint8 is scaled to [0, 1]) and returns
float32 features `(batch, dim)`; call with `train=True` and `mutable=["batch_stats"]` (and a "dropout" rng
where DropBlock is on) to train, `train=False` to encode.

Two settings change how, not what, a backbone computes; its parameters are the same tree either way, so a
checkpoint serves both:
  dtype        the compute dtype of convolutions and batch norm outputs ("bfloat16" halves activation memory
               and uses a GPU's or TPU's bf16 units); parameters stay float32, features come out float32.
  convolution  "xla" (lax.conv: cuDNN on a GPU, the MXU on a TPU), "patches" (the 3 x 3 neighbourhoods
               concatenated, times the kernel as one matmul) or "patches_in_training" (patches with
               train=True, XLA's with train=False). On XLA's CPU backend patches train Conv-4 faster, its
               convolution (and the convolution's gradient) running far below the machine's matmul rate, but
               encode (forward only, large batches) about 3x slower than XLA's (python -m
               benchmarks.backbone_step has both). resolve_convolution("auto") picks "patches_in_training" on
               a CPU and "xla" elsewhere.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

CONVOLUTIONS = ("xla", "patches", "patches_in_training")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here), which the reference recipes assume.
_batch_norm = lambda train, dtype=jnp.float32: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


def _as_float(images, dtype=jnp.float32):
    return (images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images).astype(dtype)


def resolve_convolution(convolution: str) -> str:
    """"auto" -> "patches_in_training" on a CPU backend, "xla" on GPUs and TPUs; the others as they are."""
    if convolution == "auto":
        return "patches_in_training" if jax.default_backend() == "cpu" else "xla"
    if convolution not in CONVOLUTIONS:
        raise ValueError(f"Unknown convolution {convolution!r}; known: auto, {', '.join(CONVOLUTIONS)}.")
    return convolution


def convolution_for(convolution: str, train: bool) -> str:
    """How one call computes its convolutions: "patches_in_training" is "patches" with train=True, else "xla"."""
    if convolution == "patches_in_training":
        return "patches" if train else "xla"
    return convolution


def _windows(x):
    """(batch, 2h, 2w, c) -> (batch, h, w, c, 4): each 2 x 2 window's four values, row by row."""
    batch, height, width, channels = x.shape
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).transpose(0, 1, 3, 5, 2, 4).reshape(batch, height // 2, width // 2, channels, 4)


@jax.custom_vjp
def _max_pool_even(x):
    return _windows(x).max(axis=-1)


def _max_pool_forward(x):
    windows = _windows(x)
    first_max = jnp.argmax(windows, axis=-1)  # the position the gradient goes to, chosen with the value itself
    return jnp.take_along_axis(windows, first_max[..., None], -1)[..., 0], first_max.astype(jnp.int8)


def _max_pool_backward(first_max, g):
    batch, height, width, channels = g.shape
    spread = jnp.where(jnp.arange(4, dtype=jnp.int8) == first_max[..., None], g[..., None], jnp.zeros((), g.dtype))
    return (spread.reshape(batch, height, width, channels, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(batch, 2 * height, 2 * width, channels),)


_max_pool_even.defvjp(_max_pool_forward, _max_pool_backward)


def max_pool_2x2(x):
    """2 x 2 max-pooling, stride 2, odd edges dropped: nn.max_pool's values, and its gradient (to the first
    maximum of each window), computed faster by XLA's CPU backend than reduce_window's select-and-scatter
    (python -m benchmarks.backbone_step). The backward pass reuses the forward's argmax: a gradient found by comparing the
    input with the pooled maximum (jnp.max's own) came out wrong under jit and vmap on XLA's CPU backend,
    which can compute the input twice with different rounding, so that no input equals the maximum."""
    return _max_pool_even(x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2])


class Conv(nn.Conv):
    """nn.Conv (its parameters, names and initialisers) with a second way to compute a stride-1 "SAME"
    convolution: `convolution="patches"` concatenates each pixel's k x k neighbourhood and multiplies by the
    kernel reshaped to (k * k * in, out), one matmul."""

    convolution: str = "xla"

    @nn.compact
    def __call__(self, x):
        if self.convolution == "xla":
            return super().__call__(x)
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        height, width = x.shape[1], x.shape[2]
        padded = jnp.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
        patches = jnp.concatenate([padded[:, i : i + height, j : j + width] for i in range(kh) for j in range(kw)], axis=-1)
        y = patches @ kernel.reshape(kh * kw * kernel.shape[2], self.features)
        return y if bias is None else y + bias


class Conv4(nn.Module):
    """4 x [conv 3x3 (64 channels), batch norm, ReLU, max-pool 2], flattened (64-d at 28 x 28, 1600 at 84)."""

    channels: int = 64
    dtype: str = "float32"
    convolution: str = "xla"

    @nn.compact
    def __call__(self, images, train: bool = False):
        dtype = DTYPES[self.dtype]
        x = _as_float(images, dtype)
        for _ in range(4):
            x = Conv(self.channels, (3, 3), padding="SAME", dtype=dtype, convolution=convolution_for(self.convolution, train))(x)
            x = nn.relu(_batch_norm(train, dtype)(x))
            x = max_pool_2x2(x)
        return x.reshape(x.shape[0], -1).astype(jnp.float32)


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
        scale = keep.size / jnp.maximum(keep.astype(jnp.float32).sum(), 1.0)  # summed in float32: exact in bf16 runs too
        return x * keep * scale.astype(x.dtype)


class ResidualBlock(nn.Module):
    """3 x conv 3x3 with batch norm (LeakyReLU 0.1 between), a 1x1 shortcut, max-pool 2."""

    channels: int
    activate_output: bool = True
    drop_rate: float = 0.0
    drop_block_size: int = 1
    dtype: str = "float32"
    convolution: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool):
        dtype = DTYPES[self.dtype]
        convolution = convolution_for(self.convolution, train)
        conv = lambda k: Conv(self.channels, (k, k), padding="SAME", use_bias=False, dtype=dtype, convolution=convolution)
        norm = lambda: _batch_norm(train, dtype)
        out = nn.leaky_relu(norm()(conv(3)(x)), 0.1)
        out = nn.leaky_relu(norm()(conv(3)(out)), 0.1)
        out = norm()(conv(3)(out))
        out = out + norm()(conv(1)(x))
        if self.activate_output:
            out = nn.leaky_relu(out, 0.1)
        out = max_pool_2x2(out)
        return DropBlock(self.drop_rate, self.drop_block_size)(out, train)


class ResNet12(nn.Module):
    """ResNet-12: four residual blocks, no activation after the last one, global average pooling."""

    widths: Sequence[int] = (64, 128, 256, 512)
    drop_rate: float = 0.0  # DropBlock rate in the last two blocks (0: off)
    drop_block_size: int = 5
    dtype: str = "float32"
    convolution: str = "xla"

    @nn.compact
    def __call__(self, images, train: bool = False):
        x = _as_float(images, DTYPES[self.dtype])
        last = len(self.widths) - 1
        for index, width in enumerate(self.widths):
            rate = self.drop_rate if index >= last - 1 else 0.0
            size = self.drop_block_size if index == last else 1
            block = ResidualBlock(width, activate_output=index < last, drop_rate=rate, drop_block_size=size, dtype=self.dtype, convolution=self.convolution)
            x = block(x, train)
        return x.astype(jnp.float32).mean(axis=(1, 2))


def _resnet12(stages: tuple[float, ...]):
    """ResNet-12 whose stage widths are `stages` times the first stage's `width` (64 by default)."""
    return lambda width=64, **kw: ResNet12(widths=tuple(int(round(width * s)) for s in stages), **kw)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "conv4": lambda width=64, **kw: Conv4(channels=width, **kw),
    "resnet12": _resnet12((1, 2, 4, 8)),  # 64-128-256-512, the MetaDiff reference's
    "resnet12_wide": _resnet12((1, 2.5, 5, 10)),  # 64-160-320-640, MetaOptNet's
}


def make_backbone(name: str, width: int = 0, dtype: str = "float32", convolution: str = "auto", **kwargs) -> nn.Module:
    """Backbone `name`; `width` (0: the standard 64) sets its first stage's channels, the later ones scale;
    `dtype` ("float32", "bfloat16") is its compute dtype and `convolution` ("auto", "xla", "patches") how its
    convolutions run (module docstring)."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}.")
    if dtype not in DTYPES:
        raise ValueError(f"Unknown backbone dtype {dtype!r}; known: {', '.join(DTYPES)}.")
    if width:
        kwargs["width"] = width
    return BACKBONES[name](dtype=dtype, convolution=resolve_convolution(convolution), **kwargs)


def init_variables(backbone: nn.Module, rng, image_shape: tuple[int, ...]):
    """params and batch_stats for images of `image_shape` (H, W, C)."""
    return backbone.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)


def feature_dim(backbone: nn.Module, image_shape: tuple[int, ...]) -> int:
    shapes = jax.eval_shape(lambda: backbone.init_with_output(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False)[0])
    return int(shapes.shape[-1])
