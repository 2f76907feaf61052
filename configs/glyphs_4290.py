"""The previous default: every KanjiVG character, 4,290 / 1,072 / 1,341 classes of 20 light renders, 28 x 28.

    python -m launch.main --config configs/glyphs_4290.py --workdir runs/glyphs_4290

With 4,290 base classes a pretrained Conv-4 saturates the 5-way task (the prototype classifier at 99.9 %,
docs/datasets.md): a dataset for checking that things run, not for telling methods apart. Pretraining: 6 epochs.
Results are on renders of glyph stroke data, not Omniglot.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset.config = "28px"
    config.pretrain.epochs = 6
    return config
