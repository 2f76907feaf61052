"""The pretraining step of Conv-4 on 28 x 28 glyphs (batch 128, the default main job's) on this machine, by how
the backbone computes: XLA's convolution or patches + matmul, and max-pooling by reduce_window (whose
gradient is select-and-scatter: flax's nn.max_pool, the code before) or by the window argmax
(backbones.max_pool_2x2), in float32 and bfloat16.

    python -m benchmarks.backbone_step

The same parameters and the same math in every row (backbones.py says what differs in rounding); rows are
timed in one run, beside this machine's 1024^3 float32 matmul rate, as this VM's speed varies from day to day.
"""

from __future__ import annotations

import flax.linen as nn

from benchmarks import common, report
from metadiff_jax import backbones, pretrain

BATCH, SIZE, CLASSES = 128, 28, 64


def seconds_per_step(convolution: str, pooling: str, dtype: str, steps: int) -> float:
    original = backbones.max_pool_2x2
    if pooling == "reduce_window":
        backbones.max_pool_2x2 = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    try:
        backbone = backbones.make_backbone("conv4", dtype=dtype, convolution=convolution)
        return common.pretrain_step_seconds(backbone, pretrain.PretrainConfig(), (SIZE, SIZE, 1), CLASSES, steps)
    finally:
        backbones.max_pool_2x2 = original


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
                "convolution": convolution,
                "max_pool": pooling,
                "dtype": dtype,
                "ms_per_step": round(1e3 * seconds, 1),
                "images_per_s": round(BATCH / seconds, 1),
                "matmul_probe_gflops": round(probe),
            }
        )
        print(rows[-1], flush=True)
    before = rows[0]["ms_per_step"]
    for row in rows:
        row["speedup_vs_first_row"] = round(before / row["ms_per_step"], 2)
    report.publish(
        "backbone_step",
        rows,
        "CPU: the Conv-4 pretraining step by convolution, pooling and dtype",
        f"Conv-4 + linear head over {CLASSES} classes, {SIZE} x {SIZE} x 1, batch {BATCH}, SGD Nesterov, on-device shift; "
        "median of 3 runs of 10 steps after compilation. The first row is the code before the backbone's CPU path "
        "(XLA's convolution, nn.max_pool); the default on a CPU (convolution auto) is patches + argmax, float32.",
    )


if __name__ == "__main__":
    main()
