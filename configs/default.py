"""The default run: the embedded KanjiVG glyph dataset at 28 x 28, 5-way episodes.

    python -m launch.main --config configs/default.py --workdir runs/default

Builds the dataset on first use (about 2 minutes on 2 cores; reused afterwards) and prints its summary.
Override any key on the command line, e.g. `--config.episodes.shots=5`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "kanjivg_glyphs"
    config.dataset.config = "28px"
    # Where built datasets live; empty means tfds' default (~/tensorflow_datasets, or $TFDS_DATA_DIR).
    config.dataset.data_dir = ""
    # Processes that render the dataset; 0 means one per core.
    config.dataset.workers = 0

    config.episodes = ml_collections.ConfigDict()
    config.episodes.ways = 5
    config.episodes.shots = 1
    config.episodes.queries = 15
    config.episodes.test_episodes = 600
    return config
