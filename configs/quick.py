"""A quick run on the small glyph dataset (100 classes): the whole path in about a minute.

    python -m launch.main --config configs/quick.py --workdir runs/quick
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset.config = "small"
    config.episodes.test_episodes = 100
    config.pretrain.epochs = 3
    config.pretrain.batch_size = 64
    config.pretrain.validation_episodes = 50
    config.metadiff.steps = 1000
    config.metadiff.timesteps = 100
    return config
