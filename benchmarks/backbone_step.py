"""The pretraining step of Conv-4 on 28 x 28 glyphs (batch 128, the default main job's) on this machine, by how
the backbone computes: XLA's convolution or patches + matmul, and max-pooling by reduce_window (whose
gradient is select-and-scatter: flax's nn.max_pool, the code before) or by the window argmax
(backbones.max_pool_2x2), in float32 and bfloat16; and encoding (train=False, batch 1024, the feature
stage's) by either convolution, which is why "auto" on a CPU trains through patches and encodes through XLA's.

    python -m benchmarks.backbone_step

The same parameters and the same math in every row (backbones.py says what differs in rounding); rows are
timed in one run, beside this machine's 1024^3 float32 matmul rate, as this VM's speed varies from day to day.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from benchmarks import common, report
from metadiff_jax import backbones, pretrain

BATCH, SIZE, CLASSES = 128, 28, 64
ENCODE_BATCH, ENCODE_IMAGES = 1024, 8192


def seconds_per_step(convolution: str, pooling: str, dtype: str, steps: int) -> float:
    original = backbones.max_pool_2x2
    if pooling == "reduce_window":
        backbones.max_pool_2x2 = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    try:
        backbone = backbones.make_backbone("conv4", dtype=dtype, convolution=convolution)
        return common.pretrain_step_seconds(backbone, pretrain.PretrainConfig(), (SIZE, SIZE, 1), CLASSES, steps)
    finally:
        backbones.max_pool_2x2 = original


def encode_seconds_per_batch(convolution: str) -> float:
    """Seconds per batch of ENCODE_BATCH images through pretrain.make_encoder, after compilation (median of 3)."""
    backbone = backbones.make_backbone("conv4", convolution=convolution)
    variables = backbones.init_variables(backbone, jax.random.PRNGKey(0), (SIZE, SIZE, 1))
    images = np.random.default_rng(0).integers(0, 256, (ENCODE_IMAGES, SIZE, SIZE, 1), dtype=np.uint8)
    encode = pretrain.make_encoder(backbone, ENCODE_BATCH)
    encode(variables, images[:ENCODE_BATCH])
    return common.median_seconds(lambda: encode(variables, images), 3) * ENCODE_BATCH / ENCODE_IMAGES


def main() -> None:
    probe = common.matmul_peak_gflops(1024)
    rows = []
    for convolution, pooling, dtype in (
        ("xla", "reduce_window", "float32"),
        ("xla", "argmax", "float32"),
        ("patches", "reduce_window", "float32"),
        ("patches", "argmax", "float32"),
        ("patches", "argmax", "bfloat16"),
    ):
        seconds = seconds_per_step(convolution, pooling, dtype, steps=10)
        rows.append(
            {
                "pass": "train step",
                "batch": BATCH,
                "convolution": convolution,
                "max_pool": pooling,
                "dtype": dtype,
                "ms_per_batch": round(1e3 * seconds, 1),
                "images_per_s": round(BATCH / seconds, 1),
                "matmul_probe_gflops": round(probe),
            }
        )
        print(rows[-1], flush=True)
    before = rows[0]["ms_per_batch"]
    for row in rows:
        row["speedup_vs_first_row"] = round(before / row["ms_per_batch"], 2)
    for convolution in ("xla", "patches"):
        seconds = encode_seconds_per_batch(convolution)
        rows.append(
            {
                "pass": "encode",
                "batch": ENCODE_BATCH,
                "convolution": convolution,
                "max_pool": "argmax",
                "dtype": "float32",
                "ms_per_batch": round(1e3 * seconds, 1),
                "images_per_s": round(ENCODE_BATCH / seconds, 1),
                "matmul_probe_gflops": round(probe),
                "speedup_vs_first_row": None,
            }
        )
        print(rows[-1], flush=True)
    report.publish(
        "backbone_step",
        rows,
        "CPU: the Conv-4 pretraining step by convolution, pooling and dtype",
        f"Train step: Conv-4 + linear head over {CLASSES} classes, {SIZE} x {SIZE} x 1, batch {BATCH}, SGD Nesterov, "
        "on-device shift; median of 3 runs of 10 steps after compilation. The first row is the code before the "
        f"backbone's CPU path (XLA's convolution, nn.max_pool). Encode: pretrain.make_encoder on {ENCODE_IMAGES} random "
        f"images in batches of {ENCODE_BATCH}, median of 3 passes after compilation. The default on a CPU (convolution "
        "auto = patches_in_training) trains through patches + argmax, float32, and encodes through XLA's convolution.",
    )


if __name__ == "__main__":
    main()
