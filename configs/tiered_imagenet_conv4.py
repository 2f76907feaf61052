"""MetaDiff on tieredImageNet with Conv-4, the paper's protocol (configs/paper.py).

Targets MetaDiff's published 5-way accuracy,
57.77 +- 0.90 (1-shot) and 75.46 +- 0.69 (5-shot) %, mean +- 95% CI over 600
test episodes (docs/reference.md). Put MetaOptNet's tieredImageNet files (train_images.npz,
train_labels.pkl, val_..., test_...) in <data_dir>/downloads/manual (or pass
--config.dataset.manual_dir); the first run checks and converts them.

One GPU:
    python -m launch.main --config configs/tiered_imagenet_conv4.py --workdir runs/tiered_conv4
A TPU pod slice (WORKDIR and the data folder on storage every worker mounts; batch a multiple of the chips):
    TPU_NAME=metadiff ZONE=us-central2-b ACCELERATOR=v4-8 WORKDIR=/mnt/shared/runs/tiered_conv4 \
        launch/tpu_pod.sh configs/tiered_imagenet_conv4.py --config.dataset.data_dir=/mnt/shared/tfds
The whole path with a narrow backbone and a few steps (tests run it on fake files; it measures nothing):
    python -m launch.main --config configs/tiered_imagenet_conv4.py:quick --workdir runs/tiered_conv4_quick
"""

import ml_collections

from configs import paper


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return paper.paper_config("tiered_imagenet", "conv4", variant)
