"""A quick run on the small glyph dataset (100 classes): a smoke test of the whole path in seconds.

    python -m launch.main --config configs/quick.py --workdir runs/quick
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset.config = "small"
    config.episodes.test_episodes = 100
    return config
