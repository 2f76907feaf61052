"""MetaDiff on miniImageNet with Conv-4, the paper's protocol (configs/paper.py).

Targets MetaDiff's published 5-way accuracy,
55.06 +- 0.81 (1-shot) and 73.18 +- 0.64 (5-shot) %, mean +- 95% CI over 600
test episodes (docs/reference.md). Put MetaOptNet's miniImageNet pickles (or --config.dataset.config=csv with Ravi &
Larochelle's csv files and the images) in <data_dir>/downloads/manual (or pass
--config.dataset.manual_dir); the first run checks and converts them.

One GPU:
    python -m launch.main --config configs/mini_imagenet_conv4.py --workdir runs/mini_conv4
A TPU pod slice (WORKDIR and the data folder on storage every worker mounts; batch a multiple of the chips):
    TPU_NAME=metadiff ZONE=us-central2-b ACCELERATOR=v4-8 WORKDIR=/mnt/shared/runs/mini_conv4 \
        launch/tpu_pod.sh configs/mini_imagenet_conv4.py --config.dataset.data_dir=/mnt/shared/tfds
The whole path with a narrow backbone and a few steps (tests run it on fake files; it measures nothing):
    python -m launch.main --config configs/mini_imagenet_conv4.py:quick --workdir runs/mini_conv4_quick
"""

import ml_collections

from configs import paper


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return paper.paper_config("mini_imagenet", "conv4", variant)
